"""Fit the post-hoc recalibration of imputations on calibration patients (torch side).

:func:`calibrate_imputation` hides each Gaussian modality for the calibration patients that
have it, draws its imputation from their other modalities in decoder space, and fits an
:class:`~bayesfuse.posterior.imputation_calibration.ImputationRecalibration` per modality (the
math lives in :mod:`bayesfuse.posterior.imputation_calibration`, numpy only). Default
calibration patients: the model's own early-stopping validation patients (they took no gradient
step, so the fit is honest).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import DataError, NoModalityWarning
from bayesfuse.posterior.imputation_calibration import ImputationRecalibration, fit_imputation_recalibration

__all__ = ["calibrate_imputation", "validation_data"]


def validation_data(model: Any) -> MultiModalData:
    """The model's early-stopping validation patients (needs the training data attached)."""
    data = getattr(model, "_train_data", None)
    cfg = getattr(model, "train_config_", None) or {}
    if data is None or not cfg.get("n_validation"):
        raise DataError("calibrate_imputation() without data uses the model's early-stopping validation patients, "
                        "but this model has none (fit with validation_fraction > 0, or loaded from disk). Pass "
                        "calibration patients that were not used for training: calibrate_imputation(data).")
    ids = data.sample_ids[data.presence.to_numpy().any(axis=1)]
    _, val = model._validation_split(ids, data, cfg["validation_fraction"], cfg["seed"])
    return data.subset(ids=val)


@torch.no_grad()
def calibrate_imputation(model: Any, data: MultiModalData | None = None,
                         modalities: Sequence[str] | str | None = None, mode: str = "global", level: float = 0.9,
                         num_samples: int = 200, seed: int = 0, min_patients: int = 10
                         ) -> dict[str, ImputationRecalibration]:
    """Fit and store (``model.imputation_calibration_``) the recalibration of imputed modalities.

    See :meth:`bayesfuse.FusionModel.calibrate_imputation` for the parameters.
    """
    module = model._check_fitted()
    module.eval()
    if int(num_samples) < 2:
        raise ValueError(f"num_samples={num_samples}: the spread is fitted on the central interval of the draws, "
                         "which needs at least 2 (use >= 100, about as many as impute() will draw).")
    if int(num_samples) < 50:
        warnings.warn(f"num_samples={num_samples}: the spread is fitted on the central interval of this many "
                      "draws, which is narrower than that of many draws; impute() with more draws would then "
                      "over-cover. Use >= 100 (about as many as impute() will draw).", UserWarning, stacklevel=3)
    if data is None:
        data = validation_data(model)
    if not isinstance(data, MultiModalData):
        raise TypeError("data must be a bf.MultiModalData (calibration patients not used for training).")
    gaussian = [m for m in model.modalities if model.transforms[m].likelihood == "gaussian"]
    if modalities is None:
        modalities = [m for m in gaussian if m in data.modality_names and data.modality(m).shape[0] > 0]
        if not modalities:
            raise DataError(f"No calibration patient has a Gaussian modality ({gaussian}); nothing to recalibrate.")
    if isinstance(modalities, str):
        modalities = [modalities]
    modalities = list(modalities)
    for m in modalities:
        if m not in model.transforms:
            raise DataError(f"Modality {m!r} is not one of the model's {model.modalities}.")
        if model.transforms[m].likelihood != "gaussian":
            raise ValueError(f"Modality {m!r} has likelihood {model.transforms[m].likelihood!r}; the recalibration "
                             f"(shrinkage of the predictive mean + spread scale) is defined for Gaussian modalities "
                             f"only ({gaussian}).")
        if m not in data.modality_names or data.modality(m).shape[0] == 0:
            raise DataError(f"No calibration patient has modality {m!r}; pass patients that have it.")
    from bayesfuse.model.impute import decoder_space_draws  # noqa: PLC0415

    fitted = dict(getattr(model, "imputation_calibration_", None) or {})
    out = {}
    for m in modalities:
        tf = model.transforms[m]
        held = data.modality(m)
        hidden = data.subset(ids=held.index).drop_modalities([m])
        has_other = hidden.presence.reindex(columns=model.modalities, fill_value=False).to_numpy().any(axis=1)
        if not has_other.all():
            warnings.warn(f"{int((~has_other).sum())} calibration patient(s) have only {m!r}; they are left out "
                          "(their imputation would be the prior predictive).", NoModalityWarning, stacklevel=3)
            held = held.loc[has_other]
            hidden = hidden.subset(ids=held.index)
        if held.shape[0] < min_patients:
            raise ValueError(f"Only {held.shape[0]} calibration patient(s) have {m!r} and another modality; the "
                             f"recalibration needs at least min_patients={min_patients}. Pass more patients (e.g. "
                             "a held-out cut of the training data) or lower min_patients.")
        arrays = tf.transform(held)
        truth = np.where(arrays.cell_mask, arrays.observed, np.nan)   # decoder space (standardised)
        store = model._store(hidden, strict_targets=False)
        chunks, _, means = decoder_space_draws(model, store, [m], num_samples, seed, 1024, {}, None)
        draws, mean = np.concatenate(chunks[m], axis=1), np.concatenate(means[m], axis=0)
        if len(held) < 30:
            warnings.warn(f"{m!r}: only {len(held)} calibration patients; the slope and spread are noisy.",
                          UserWarning, stacklevel=3)
        out[m] = fit_imputation_recalibration(m, truth, mean, draws, mode=mode, level=level, seed=seed,
                                              min_patients=min_patients)
    fitted.update(out)
    model.imputation_calibration_ = fitted
    return out
