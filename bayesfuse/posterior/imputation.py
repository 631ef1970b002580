"""The :class:`Imputation` returned by :meth:`bayesfuse.FusionModel.impute` (numpy / pandas only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Imputation"]


@dataclass
class Imputation:
    """Posterior-predictive draws of modalities, in original units, for a set of patients.

    Draws of a modality come from ``z ~ q(z | x_present)`` (the fused posterior of the
    modalities the patient has) and ``x ~ p(x_m | z)`` with the decoder's likelihood noise
    (variational imputation). Cells that were observed are passed through unchanged in every
    draw unless the imputation was made with ``reconstruct=True``.

    Attributes
    ----------
    sample_ids : numpy.ndarray, shape (n_patients,)
        Patient ids, in the order of the input data.
    draws : dict[str, numpy.ndarray]
        Per modality, draws of shape ``(num_samples, n_patients, n_features)`` in the data's
        original units (Bernoulli: 0/1; counts: integers).
    feature_names : dict[str, list[str]]
        Per modality, the column names of the draws (the model's features).
    observed_mask : dict[str, numpy.ndarray]
        Per modality, bool ``(n_patients, n_features)``: True where the value was observed
        and passed through (never True when ``reconstruct``).
    likelihoods : dict[str, str]
        Decoder likelihood of each modality.
    presence : pandas.DataFrame, shape (n_patients, n_model_modalities)
        Which modalities each patient had (bool), indexed by patient id.
    reconstruct : bool
        True when observed cells were redrawn from the model instead of passed through.
    unmodelled_features : dict[str, list[str]]
        Training columns of a modality that the model does not decode (unselected by count
        feature selection); they are not imputed.
    library : dict[str, numpy.ndarray]
        Count modalities only: the library size used per patient, shape (n_patients,) (the
        patient's own where it has the modality, else the training median).
    seed : int
    extra : dict
        ``extra["recalibrated"]``: the Gaussian modalities whose draws were recalibrated
        (:meth:`bayesfuse.FusionModel.calibrate_imputation`) for the patients lacking them.
    probabilities : dict[str, numpy.ndarray]
        Bernoulli modalities only: ``P(x = 1 | x_present)`` of shape (n_patients, n_features),
        the decoder's probability averaged over the ``z`` draws (Rao-Blackwellised: less Monte-Carlo
        noise than the mean of the 0/1 draws; observed cells hold the observed 0/1 unless
        ``reconstruct``).
    """

    sample_ids: np.ndarray
    draws: dict[str, np.ndarray]
    feature_names: dict[str, list[str]]
    observed_mask: dict[str, np.ndarray]
    likelihoods: dict[str, str]
    presence: pd.DataFrame
    reconstruct: bool = False
    unmodelled_features: dict[str, list[str]] = field(default_factory=dict)
    library: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------------ basics
    @property
    def modalities(self) -> list[str]:
        """Imputed modalities."""
        return list(self.draws)

    @property
    def num_samples(self) -> int:
        """Number of draws ``S``."""
        return int(next(iter(self.draws.values())).shape[0]) if self.draws else 0

    @property
    def n_patients(self) -> int:
        return int(len(self.sample_ids))

    @property
    def no_modality(self) -> np.ndarray:
        """Bool, shape (n_patients,): patients with no modality (imputed from the prior predictive)."""
        return ~self.presence.to_numpy().any(axis=1)

    def _index(self) -> pd.Index:
        return pd.Index(self.sample_ids, name="sample_id")

    def _check(self, modality: str) -> str:
        if modality not in self.draws:
            raise KeyError(f"Modality {modality!r} was not imputed; imputed modalities are {self.modalities}. "
                           "Pass it in impute(..., modalities=[...]).")
        return modality

    def __getitem__(self, modality: str) -> np.ndarray:
        """Draws of ``modality``, shape ``(num_samples, n_patients, n_features)``."""
        return self.draws[self._check(modality)]

    def __contains__(self, modality: object) -> bool:
        return modality in self.draws

    def features(self, modality: str) -> list[str]:
        """Feature names of ``modality`` (last axis of its draws)."""
        return list(self.feature_names[self._check(modality)])

    def _frame(self, values: np.ndarray, modality: str) -> pd.DataFrame:
        return pd.DataFrame(values, index=self._index(), columns=pd.Index(self.features(modality), name="feature"))

    def observed(self, modality: str) -> pd.DataFrame:
        """Bool frame (patients x features): True where the value was observed and passed through."""
        return self._frame(self.observed_mask[self._check(modality)], modality)

    # -------------------------------------------------------------- summaries
    def mean(self, modality: str) -> pd.DataFrame:
        """Posterior-predictive mean per patient and feature (Bernoulli: probability of 1)."""
        return self._frame(self[modality].mean(axis=0), modality)

    def probability(self, modality: str) -> pd.DataFrame:
        """``P(x = 1)`` per patient and feature of a Bernoulli modality (see ``probabilities``)."""
        m = self._check(modality)
        if m not in self.probabilities:
            raise ValueError(f"Modality {m!r} has likelihood {self.likelihoods.get(m)!r}; probability() is "
                             "defined for Bernoulli (0/1) modalities only. Use mean() or interval().")
        return self._frame(self.probabilities[m], m)

    def std(self, modality: str) -> pd.DataFrame:
        """Posterior-predictive standard deviation per patient and feature (0 where observed)."""
        return self._frame(self[modality].std(axis=0), modality)

    def interval(self, modality: str, prob: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Central ``prob`` predictive interval ``(lower, upper)`` from the draws' quantiles.

        For discrete modalities (Bernoulli, counts) the interval ends are quantiles of
        discrete draws, so the interval covers at least ``prob`` of the mass (often more).
        """
        if not 0 < prob < 1:
            raise ValueError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% interval.")
        a = (1 - prob) / 2
        lo, hi = np.quantile(self[modality], [a, 1 - a], axis=0)
        return self._frame(lo, modality), self._frame(hi, modality)

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """Completed tables per modality: observed values kept, missing ones = posterior mean.

        Rows are every input patient, columns the model's features; Bernoulli cells that were
        imputed hold the probability of 1 (threshold them if a tool needs 0/1).
        """
        out = {}
        for m in self.modalities:
            d = self.draws[m]
            mean = d.mean(axis=0)
            if not self.reconstruct:
                mean = np.where(self.observed_mask[m], d[0], mean)
            out[m] = self._frame(mean, m)
        return out

    def to_frame(self, modalities: list[str] | str | None = None, prob: float = 0.9) -> pd.DataFrame:
        """Every per-patient summary of the imputed modalities in one frame indexed by sample id.

        Columns are a ``(modality, stat, feature)`` MultiIndex; each ``frame[(m, stat)]`` block equals
        the matching method: ``value`` (:meth:`to_frames`, the completed table), ``mean``, ``std``,
        ``lower`` / ``upper`` (:meth:`interval` at ``prob``), ``observed`` (bool) and, for a Bernoulli
        modality, ``probability``.
        """
        mods = self.modalities if modalities is None else [modalities] if isinstance(modalities, str) \
            else list(modalities)
        completed = self.to_frames()
        blocks = {}
        for m in mods:
            lo, hi = self.interval(m, prob)
            stats = {"value": completed[self._check(m)], "mean": self.mean(m), "std": self.std(m),
                     "lower": lo, "upper": hi, "observed": self.observed(m)}
            if m in self.probabilities:
                stats["probability"] = self.probability(m)
            for stat, df in stats.items():
                blocks[(m, stat)] = df
        out = pd.concat(blocks, axis=1, names=["modality", "stat", "feature"])
        out.index = self._index()
        return out

    def to_anndata(self, modality: str, prob: float = 0.9):
        """One imputed modality as an AnnData (patients x features): ``X`` = the completed table of
        :meth:`to_frames`, ``layers`` = ``mean``, ``std``, ``lower``, ``upper`` (central ``prob``
        interval) and ``observed`` (1 where passed through). Needs ``pip install bayesfuse[scverse]``."""
        from bayesfuse.posterior.export import _anndata  # noqa: PLC0415

        ad = _anndata()
        m = self._check(modality)
        lo, hi = self.interval(m, prob)
        obs = pd.DataFrame({"has_modality": self.presence[m].to_numpy().astype(bool)} if m in self.presence else {},
                           index=pd.Index([str(s) for s in self.sample_ids], name="sample_id"))
        return ad.AnnData(X=self.to_frames()[m].to_numpy(), obs=obs,
                          var=pd.DataFrame(index=pd.Index(self.features(m), name="feature")),
                          layers={"mean": self.mean(m).to_numpy(), "std": self.std(m).to_numpy(),
                                  "lower": lo.to_numpy(), "upper": hi.to_numpy(),
                                  "observed": self.observed_mask[m].astype(np.int8)})

    def to_mudata(self, prob: float = 0.9):
        """Every imputed modality (:meth:`to_anndata`) in one ``mudata.MuData``."""
        import mudata  # noqa: PLC0415

        return mudata.MuData({m: self.to_anndata(m, prob) for m in self.modalities})

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}[{self.draws[m].shape[2]}; {int((~self.observed_mask[m]).sum())} cells imputed]"
                         for m in self.modalities)
        flag = f"; {int(self.no_modality.sum())} patient(s) from the prior" if self.no_modality.any() else ""
        return f"Imputation({self.num_samples} draws x {self.n_patients} patients; {mods}{flag})"
