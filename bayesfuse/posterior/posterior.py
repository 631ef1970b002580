"""The :class:`Posterior` returned by :meth:`bayesfuse.FusionModel.predict`.

Everything here is numpy / pandas / xarray: calibration, metrics and plotting consume a
Posterior without touching torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.exceptions import ArgumentError, InputTypeError
from bayesfuse.heads import Categorical, Head, Survival
from bayesfuse.posterior import survival as _surv
from bayesfuse.posterior._uncertainty import entropy_decomposition

__all__ = ["Posterior"]


def _from_dict(az, groups: dict[str, dict[str, np.ndarray]], coords: dict, dims: dict):
    """``arviz.from_dict`` for arviz 0.x (one keyword per group; InferenceData) and 1.x
    (a ``{group: {var: array}}`` mapping; DataTree). Both expose ``.posterior``."""
    major = int(str(az.__version__).split(".")[0])
    if major >= 1:
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(**groups, coords=coords, dims=dims)


@dataclass
class Posterior:
    """Posterior-predictive draws for a set of patients.

    Attributes
    ----------
    sample_ids : numpy.ndarray, shape (n_patients,)
        Patient ids, in the order of the input data.
    heads : dict[str, Head]
        Head specifications (with fitted class labels / time grids).
    draws : dict[str, dict[str, numpy.ndarray]]
        Per head, named arrays whose two leading axes are ``(num_samples, n_patients)``.
        Categorical heads store ``"probs"`` of shape ``(num_samples, n_patients, n_classes)``.
    latent : numpy.ndarray, shape (num_samples, n_patients, latent_dim)
        Draws of ``z`` from the fused (product-of-experts) posterior.
    latent_loc, latent_scale : numpy.ndarray, shape (n_patients, latent_dim)
        Parameters of the fused Gaussian posterior of ``z``.
    presence : pandas.DataFrame, shape (n_patients, n_modalities)
        Which modalities each patient had (bool), indexed by patient id.
    modality_precision : numpy.ndarray, shape (n_patients, n_modalities, latent_dim)
        Precision each present modality's expert contributed (0 where absent).
    seed : int
        Seed the draws were made with.
    """

    sample_ids: np.ndarray
    heads: dict[str, Head]
    draws: dict[str, dict[str, np.ndarray]]
    latent: np.ndarray
    latent_loc: np.ndarray
    latent_scale: np.ndarray
    presence: pd.DataFrame
    modality_precision: np.ndarray
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ basics
    @property
    def num_samples(self) -> int:
        """Number of posterior draws ``S``."""
        return int(self.latent.shape[0])

    @property
    def n_patients(self) -> int:
        return int(len(self.sample_ids))

    @property
    def n_modalities(self) -> pd.Series:
        """Number of modalities each patient had (0 = scored from the prior)."""
        return self.presence.sum(axis=1).astype(int)

    @property
    def no_modality(self) -> np.ndarray:
        """Boolean flag, shape (n_patients,): patients with no modality (prior predictive)."""
        return self.n_modalities.to_numpy() == 0

    def _head(self, head: str, kind: type | None = None) -> Head:
        if head not in self.heads:
            raise KeyError(f"No head {head!r} in this posterior; heads are {sorted(self.heads)}.")
        spec = self.heads[head]
        if kind is not None and not isinstance(spec, kind):
            raise InputTypeError(f"Head {head!r} is {spec.kind!r}, not {kind.kind!r}.")  # type: ignore[attr-defined]
        return spec

    def _categorical_heads(self) -> list[str]:
        return [k for k, v in self.heads.items() if isinstance(v, Categorical)]

    # ------------------------------------------------------------ categorical
    def probs(self, head: str) -> np.ndarray:
        """Per-draw class probabilities, shape ``(num_samples, n_patients, n_classes)``."""
        self._head(head, Categorical)
        return self.draws[head]["probs"]

    def classes(self, head: str) -> list:
        """Class labels of ``head`` in the column order of :meth:`probs`."""
        spec = self._head(head, Categorical)
        return list(spec.classes)  # type: ignore[attr-defined]

    def mean_probs(self, head: str) -> pd.DataFrame:
        """Posterior-predictive class probabilities ``E[p(y | z, x)]``, one row per patient.

        Averaged in float64 and renormalised, so each row sums to 1 to float64 rounding (float32
        draws averaged in float32 can drift by more than 1e-6, the metrics' tolerance).
        """
        mean = self.probs(head).mean(axis=0, dtype=np.float64)
        mean /= mean.sum(axis=1, keepdims=True)
        return pd.DataFrame(mean, index=pd.Index(self.sample_ids, name="sample_id"),
                            columns=self.classes(head))

    def predict(self, head: str) -> pd.Series:
        """Most probable class under the posterior predictive (the Bayes decision for 0-1 loss)."""
        mp = self.mean_probs(head)
        return pd.Series(np.asarray(self.classes(head), dtype=object)[mp.to_numpy().argmax(1)],
                         index=mp.index, name=head)

    def credible_interval(self, head: str, prob: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Equal-tailed credible interval of each class probability: ``(lower, upper)`` frames."""
        if not 0 < prob < 1:
            raise ArgumentError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% interval.")
        p = self.probs(head)
        a = (1 - prob) / 2
        lo, hi = np.quantile(p, [a, 1 - a], axis=0)
        idx = pd.Index(self.sample_ids, name="sample_id")
        return (pd.DataFrame(lo, index=idx, columns=self.classes(head)),
                pd.DataFrame(hi, index=idx, columns=self.classes(head)))

    def summary(self, head: str | None = None, prob: float = 0.9, times=None) -> pd.DataFrame:
        """Tidy summary: one row per (patient, class) with posterior mean and credible bounds.

        Columns: ``sample_id, head, class, mean, lower, upper, n_modalities``. With ``head=None``
        every categorical head is summarised. For a survival head pass ``times``: the result is
        :meth:`survival_summary` (one row per patient and time, ``S(t | x)`` mean and band).
        """
        if head is not None and head in self.heads and isinstance(self.heads[head], Survival):
            if times is None:
                raise ArgumentError(f"Head {head!r} is a survival head: pass times, e.g. "
                                 f"post.summary({head!r}, times=[365, 730]) or post.survival_summary({head!r}, times).")
            return self.survival_summary(head, times, prob=prob)
        if times is not None:   # never drop an argument silently: times only apply to a survival head
            surv = [h for h, s in self.heads.items() if isinstance(s, Survival)]
            raise ArgumentError(f"times= applies to a survival head; pass it as post.summary(head, times=...) with "
                             f"head one of {surv} (or call post.survival_summary(head, times)).")
        heads = [head] if head is not None else self._categorical_heads()
        frames = []
        for h in heads:
            mean = self.mean_probs(h)
            lo, hi = self.credible_interval(h, prob)
            df = pd.DataFrame({
                "sample_id": np.repeat(mean.index.to_numpy(), mean.shape[1]),
                "head": h,
                "class": np.tile(np.asarray(mean.columns, dtype=object), mean.shape[0]),
                "mean": mean.to_numpy().ravel(),
                "lower": lo.to_numpy().ravel(),
                "upper": hi.to_numpy().ravel(),
                "n_modalities": np.repeat(self.n_modalities.to_numpy(), mean.shape[1]),
            })
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=["sample_id", "head", "class", "mean", "lower", "upper", "n_modalities"])
        return pd.concat(frames, ignore_index=True)

    # --------------------------------------------------------------- survival
    def _log_hazard(self, head: str) -> tuple[np.ndarray, np.ndarray]:
        spec = self._head(head, Survival)
        return self.draws[head]["log_hazard"], np.asarray(spec.cuts, dtype=np.float64)  # type: ignore[attr-defined]

    def survival_cuts(self, head: str) -> np.ndarray:
        """Inner cut points (K-1,) of the head's piecewise-constant hazard."""
        return self._log_hazard(head)[1]

    def default_times(self, head: str) -> np.ndarray:
        """Default time grid: the inner cuts (quantiles of the training event times), shape (K-1,)."""
        return self._log_hazard(head)[1].copy()

    def survival_function(self, head: str, times) -> np.ndarray:
        """Per-draw survival ``S(t | x)``, shape ``(num_samples, n_patients, len(times))``.

        ``times`` are non-negative values in any order; the last axis follows their order.
        A scalar time gives ``(num_samples, n_patients)``.
        """
        lh, cuts = self._log_hazard(head)
        return _surv.survival_function(lh, cuts, times)

    def median_survival(self, head: str, horizon: float | None = None) -> np.ndarray:
        """Per-draw median survival time, shape ``(num_samples, n_patients)``.

        ``inf`` where ``S`` never drops below 0.5 (or, with ``horizon``, not before it).
        Without ``horizon`` the last piece's hazard is extrapolated beyond the training follow-up, so
        the median is finite wherever that hazard is positive, however far out; pass
        ``horizon=`` (e.g. the longest training follow-up) to report "not reached" (``inf``) instead
        of an extrapolated time.
        """
        lh, cuts = self._log_hazard(head)
        return _surv.median_survival(lh, cuts, horizon=horizon)

    def risk(self, head: str, horizon) -> np.ndarray:
        """Per-draw ``P(T <= horizon | x)``: ``(num_samples, n_patients)`` for a scalar horizon,
        ``(num_samples, n_patients, len(horizon))`` otherwise."""
        lh, cuts = self._log_hazard(head)
        return _surv.risk(lh, cuts, horizon)

    def quantile_time(self, head: str, q) -> np.ndarray:
        """Per-draw time by which a fraction ``q`` has had the event, ``(num_samples, n_patients[, Q])``."""
        lh, cuts = self._log_hazard(head)
        return _surv.quantile_time(lh, cuts, q)

    def restricted_mean_survival(self, head: str, tau: float) -> np.ndarray:
        """Per-draw restricted mean survival time up to ``tau``, ``(num_samples, n_patients)``."""
        lh, cuts = self._log_hazard(head)
        return _surv.restricted_mean_survival(lh, cuts, tau)

    def survival_summary(self, head: str, times, prob: float = 0.9) -> pd.DataFrame:
        """Posterior mean and central ``prob`` credible band of ``S(t | x)``.

        Returns a tidy frame, one row per (patient, time) in input orders, with columns
        ``sample_id, time, mean, lower, upper, n_modalities`` (5-95% bands by default).
        """
        if not 0 < prob < 1:
            raise ArgumentError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% band.")
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if t.ndim != 1:
            raise ArgumentError(f"times must be a scalar or 1-D, got shape {t.shape}.")
        s = self.survival_function(head, t)                       # (S, N, T)
        a = (1 - prob) / 2
        lo, hi = np.quantile(s, [a, 1 - a], axis=0)
        n, nt = s.shape[1], s.shape[2]
        return pd.DataFrame({
            "sample_id": np.repeat(np.asarray(self.sample_ids, dtype=object), nt),
            "time": np.tile(t, n),
            "mean": s.mean(axis=0).ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
            "n_modalities": np.repeat(self.n_modalities.to_numpy(), nt),
        })

    def _index(self) -> pd.Index:
        return pd.Index(self.sample_ids, name="sample_id")

    def _per_time(self, draws: np.ndarray, t: np.ndarray, prob: float | None):
        """Mean (``prob=None``) or central ``prob`` band ``(lower, upper)`` of per-draw values
        ``(S, N, T)`` as patients x ``t`` frames."""
        cols = pd.Index(t, name="time")
        if prob is None:
            return pd.DataFrame(draws.mean(axis=0), index=self._index(), columns=cols)
        if not 0 < prob < 1:
            raise ArgumentError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% band.")
        a = (1 - prob) / 2
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        return (pd.DataFrame(lo, index=self._index(), columns=cols),
                pd.DataFrame(hi, index=self._index(), columns=cols))

    def _per_patient(self, draws: np.ndarray, prob: float, center: str) -> pd.DataFrame:
        """``center`` (``"mean"`` or ``"median"``) and central ``prob`` interval of per-draw values
        ``(S, N)``: columns ``center, lower, upper``."""
        if not 0 < prob < 1:
            raise ArgumentError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% interval.")
        a = (1 - prob) / 2
        q = np.quantile(draws, [0.5, a, 1 - a], axis=0)
        mid = q[0] if center == "median" else draws.mean(axis=0)
        return pd.DataFrame({center: mid, "lower": q[1], "upper": q[2]}, index=self._index())

    @staticmethod
    def _grid(times) -> np.ndarray:
        return np.atleast_1d(np.asarray(times, dtype=np.float64))

    def survival_mean(self, head: str, times) -> pd.DataFrame:
        """Posterior mean of ``S(t | x)``: patients x ``times`` (the mean over draws of
        :meth:`survival_function`)."""
        t = self._grid(times)
        return self._per_time(self.survival_function(head, t), t, None)

    def survival_interval(self, head: str, times, prob: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Central ``prob`` credible band of ``S(t | x)``: ``(lower, upper)`` frames, patients x ``times``."""
        t = self._grid(times)
        return self._per_time(self.survival_function(head, t), t, prob)

    def risk_mean(self, head: str, horizons) -> pd.DataFrame:
        """Posterior mean of ``P(T <= t | x)``: patients x ``horizons`` (the mean over draws of :meth:`risk`)."""
        t = self._grid(horizons)
        return self._per_time(self.risk(head, t), t, None)

    def risk_interval(self, head: str, horizons, prob: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Central ``prob`` credible band of ``P(T <= t | x)``: ``(lower, upper)``, patients x ``horizons``."""
        t = self._grid(horizons)
        return self._per_time(self.risk(head, t), t, prob)

    def median_survival_summary(self, head: str, prob: float = 0.9, horizon: float | None = None) -> pd.DataFrame:
        """Posterior median and central ``prob`` interval of the median survival time per patient.

        Columns ``median, lower, upper`` (quantiles over the draws of :meth:`median_survival`; ``inf``
        where the median is not reached).
        """
        return self._per_patient(self.median_survival(head, horizon=horizon), prob, "median")

    def restricted_mean_survival_summary(self, head: str, tau: float, prob: float = 0.9) -> pd.DataFrame:
        """Posterior mean and central ``prob`` interval of the restricted mean survival time up to ``tau``
        per patient: columns ``mean, lower, upper`` (over the draws of :meth:`restricted_mean_survival`)."""
        return self._per_patient(self.restricted_mean_survival(head, tau), prob, "mean")

    # ---------------------------------------------------------------- export
    def latent_summary(self):
        """The fused posterior of ``z`` per patient (mean, sd) as a :class:`~bayesfuse.posterior.latent.Latent`."""
        from bayesfuse.posterior.latent import Latent  # noqa: PLC0415

        return Latent(sample_ids=self.sample_ids, mean=self.latent_loc, sd=self.latent_scale, presence=self.presence)

    def to_frame(self, prob: float = 0.9, times=None, tau: float | None = None) -> pd.DataFrame:
        """Every per-patient summary in one frame indexed by sample id.

        Columns are a ``(head, stat, label)`` MultiIndex: categorical heads give ``mean``, ``lower``,
        ``upper`` (label = class; ``frame[(h, "mean")]`` equals :meth:`mean_probs`), ``prediction``
        and ``entropy`` (label = ``total, aleatoric, epistemic``); survival heads give
        ``survival_mean``, ``survival_lower``, ``survival_upper`` (label = time; default
        :meth:`default_times`), ``risk_mean`` (label = time), ``median_survival`` (``median, lower,
        upper``) and, with ``tau``, ``rmst`` (``mean, lower, upper``: :meth:`restricted_mean_survival_summary`);
        last ``("", "modality_weight", <modality or "prior">)`` (:meth:`modality_weights`) and
        ``("", "n_modalities", "")``. Flatten for CSV with
        ``frame.columns = [":".join(map(str, c)).strip(":") for c in frame.columns]``.
        """
        from bayesfuse.posterior.export import posterior_frame  # noqa: PLC0415

        return posterior_frame(self, prob=prob, times=times, tau=tau)

    def to_mudata(self, prob: float = 0.9, times=None):
        """Posterior summaries as a ``mudata.MuData``: one AnnData per head (patients x classes, or x times
        for a survival head) with ``X`` = posterior mean, ``layers["lower"/"upper"]`` = credible bounds and
        ``obs`` = prediction / entropy (median survival); ``obs`` of the MuData = presence and
        ``n_modalities``, ``obsm["z_mean"/"z_sd"]`` = fused posterior of ``z``. Needs
        ``pip install bayesfuse[scverse]``."""
        from bayesfuse.posterior.export import posterior_mudata  # noqa: PLC0415

        return posterior_mudata(self, prob=prob, times=times)

    # ----------------------------------------------------------- attribution
    def modality_weights(self, head: str | None = None) -> pd.DataFrame:
        """Each modality's share of the fused posterior precision of ``z`` (PoE attribution).

        For patient n the product of experts has precision ``T_n = prior + sum_m P_nm`` per
        latent dimension; the weight of modality m is ``sum_d P_nmd / sum_d T_nd`` and the
        prior gets the rest (column ``"prior"``). Rows sum to 1; an absent modality has 0.

        Parameters
        ----------
        head : str, optional
            Accepted for a per-head call style (validated if given); the shares are the same
            for every head because all heads read the same fused ``z``.

        Returns
        -------
        pandas.DataFrame, shape (n_patients, n_modalities + 1)
            Indexed by patient id; columns = modalities then ``"prior"``.
        """
        if head is not None:
            self._head(head)
        expert = self.modality_precision.sum(axis=2)  # (N, M)
        # the prior expert is N(0, I): precision 1 per latent dimension (not back-computed from
        # latent_scale, which in weight-draw modes also holds the spread between draws)
        prior = np.full(expert.shape[0], float(self.latent_loc.shape[1]))
        shares = np.column_stack([expert, prior]) / (expert.sum(axis=1) + prior)[:, None]
        return pd.DataFrame(shares, index=pd.Index(self.sample_ids, name="sample_id"),
                            columns=[*self.presence.columns, "prior"])

    # ------------------------------------------------------------ uncertainty
    def uncertainty(self, head: str) -> pd.DataFrame:
        """Decomposition of predictive uncertainty per patient, in nats.

        ``total`` = entropy of the posterior-predictive probabilities, ``aleatoric`` = expected
        entropy of the per-draw probabilities, ``epistemic`` = their difference, the mutual
        information between the label and the draw (weights and ``z``); total = aleatoric + epistemic.
        """
        total, alea, epi = entropy_decomposition(self.probs(head))
        return pd.DataFrame({"total": total, "aleatoric": alea, "epistemic": epi},
                            index=pd.Index(self.sample_ids, name="sample_id"))

    # ------------------------------------------------------------------ arviz
    def to_inference_data(self):
        """Export draws as :class:`arviz.InferenceData` (one chain).

        ``posterior`` holds ``<head>_probs`` with dims ``(chain, draw, patient, <head>_class)``
        and ``z`` with dims ``(chain, draw, patient, latent)``; survival heads add
        ``<head>_log_hazard`` ``(chain, draw, patient, <head>_piece)`` and ``<head>_survival``
        on the default grid (:meth:`default_times`) ``(chain, draw, patient, <head>_time)``;
        ``constant_data`` holds the presence mask, ``n_modalities`` and, per categorical head,
        the uncertainty decomposition ``<head>_entropy_{total,aleatoric,epistemic}`` (see
        :meth:`uncertainty`).
        """
        import arviz as az

        pid = [str(s) for s in self.sample_ids]
        posterior: dict[str, np.ndarray] = {"z": self.latent[None]}
        dims: dict[str, list[str]] = {"z": ["patient", "latent"]}
        coords: dict[str, Any] = {"patient": pid, "latent": np.arange(self.latent.shape[-1])}
        for h in self._categorical_heads():
            posterior[f"{h}_probs"] = self.probs(h)[None]
            dims[f"{h}_probs"] = ["patient", f"{h}_class"]
            coords[f"{h}_class"] = [str(c) for c in self.classes(h)]
        for h, spec in self.heads.items():
            if isinstance(spec, Survival) and h in self.draws:
                grid = self.default_times(h)
                posterior[f"{h}_log_hazard"] = self.draws[h]["log_hazard"][None]
                dims[f"{h}_log_hazard"] = ["patient", f"{h}_piece"]
                coords[f"{h}_piece"] = np.arange(self.draws[h]["log_hazard"].shape[-1])
                if grid.size:
                    posterior[f"{h}_survival"] = self.survival_function(h, grid)[None]
                    dims[f"{h}_survival"] = ["patient", f"{h}_time"]
                    coords[f"{h}_time"] = grid
        for h, arrs in self.draws.items():
            if h in self._categorical_heads() or isinstance(self.heads.get(h), Survival):
                continue
            for name, arr in arrs.items():
                var = f"{h}_{name}"
                posterior[var] = arr[None]
                extra_dims = [f"{var}_dim_{i}" for i in range(arr.ndim - 2)]
                dims[var] = ["patient", *extra_dims]
        const = {
            "presence": self.presence.to_numpy().astype(np.int8),
            "n_modalities": self.n_modalities.to_numpy(),
        }
        for h in self._categorical_heads():
            unc = self.uncertainty(h)
            for col in unc.columns:  # per-patient entropy decomposition (nats)
                const[f"{h}_entropy_{col}"] = unc[col].to_numpy()
                dims[f"{h}_entropy_{col}"] = ["patient"]
        coords["modality"] = list(self.presence.columns)
        dims.update({"presence": ["patient", "modality"], "n_modalities": ["patient"]})
        return _from_dict(az, {"posterior": posterior, "constant_data": const}, coords=coords, dims=dims)
