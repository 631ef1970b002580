"""Held-out-modality imputation protocol.

For the patients of ``data`` that have ``modality``, the modality is hidden, imputed from the
patient's other modalities (:meth:`bayesfuse.FusionModel.impute`) and compared with the hidden
values in original units by :func:`bayesfuse.metrics.imputation_metrics` (per-feature Pearson r
and RMSE of the posterior mean, medians over features; empirical coverage of the central 50%
and 90% predictive intervals).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import DataError, NoModalityWarning
from bayesfuse.metrics.imputation import (
    BinaryImputationMetrics,
    ImputationMetrics,
    binary_imputation_metrics,
    imputation_metrics,
)
from bayesfuse.posterior.imputation import Imputation

if TYPE_CHECKING:
    from bayesfuse.model.fusion_model import FusionModel

__all__ = ["ImputationEvaluation", "evaluate_imputation"]


@dataclass
class ImputationEvaluation:
    """Result of :func:`evaluate_imputation`.

    Attributes
    ----------
    modality : str
    metrics : ImputationMetrics
        ``pearson_r``, ``rmse`` (medians over features), ``coverage_50``, ``coverage_90``,
        ``per_feature``.
    n_patients : int
        Patients whose modality was hidden and scored.
    n_from_prior : int
        Of those, patients with no other modality (imputed from the prior predictive).
    truth : numpy.ndarray, shape (n_patients, n_features)
        Hidden values in original units (NaN = not observed, not scored).
    imputation : Imputation
        The draws that were scored.
    binary : BinaryImputationMetrics or None
        Bernoulli modalities: per-feature AUROC, Brier score and log loss of
        ``Imputation.probabilities`` (the informative scores for rare 0/1 features).
    """

    modality: str
    metrics: ImputationMetrics
    n_patients: int
    n_from_prior: int
    truth: np.ndarray
    imputation: Imputation
    binary: BinaryImputationMetrics | None = None

    def as_row(self) -> dict:
        """Flat dict for a results table."""
        m = self.metrics
        row = {"modality": self.modality, "pearson_r": m.pearson_r, "rmse": m.rmse,
               "coverage_50": m.coverage_50, "coverage_90": m.coverage_90, "n_features": m.n_features,
               "n_patients": self.n_patients, "n_from_prior": self.n_from_prior}
        if self.binary is not None:
            row.update(auroc=self.binary.auroc, brier=self.binary.brier, log_loss=self.binary.log_loss,
                       n_auroc_features=self.binary.n_scored)
        return row


def evaluate_imputation(model: FusionModel, data: MultiModalData, modality: str, num_samples: int = 200,
                        seed: int = 0) -> ImputationEvaluation:
    """Hide ``modality`` for every patient of ``data`` that has it, impute it, score it.

    Parameters
    ----------
    model : FusionModel
        Fitted model (trained without these patients, for an honest estimate).
    data : MultiModalData
        Evaluation patients (e.g. the test split), in the model's modalities.
    modality : str
        Modality to hide.
    num_samples : int
        Draws per patient for the predictive intervals.
    seed : int

    Returns
    -------
    ImputationEvaluation
    """
    if modality not in model.modalities:
        raise DataError(f"Modality {modality!r} is not one of the model's {model.modalities}.")
    if modality not in data.modality_names or data.modality(modality).shape[0] == 0:
        raise DataError(f"No patient of data has modality {modality!r}; there is nothing to hide and score.")
    tf = model.transforms[modality]
    held = data.modality(modality)
    truth = tf.align(held).to_numpy(dtype=np.float64)
    hidden = data.subset(ids=held.index).drop_modalities([modality])
    n_prior = int((~hidden.presence.any(axis=1)).sum()) if hidden.modality_names else len(held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoModalityWarning)
        imp = model.impute(hidden, modalities=[modality], num_samples=num_samples, seed=seed)
    metrics = imputation_metrics(truth, imp[modality])
    binary = binary_imputation_metrics(truth, imp.probabilities[modality]) if modality in imp.probabilities else None
    return ImputationEvaluation(modality=modality, metrics=metrics, n_patients=len(held), n_from_prior=n_prior,
                                truth=truth, imputation=imp, binary=binary)
