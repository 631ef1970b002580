"""Post-hoc recalibration of imputed Gaussian modalities (numpy only).

The imputation of a hidden modality is the decoder's posterior predictive under the fused
posterior of the other modalities. Its mean can be **over-dispersed**: on held-out patients the
regression slope of the truth on the predictive mean is below 1 (docs/imputation.md: ~0.3-0.4
for tcga_gbmlgg protein), so the prediction moves too far from the training mean and its RMSE
can exceed that of a mean fill even though it correlates positively with the truth. The
recalibration is the regression analogue of temperature scaling, fitted per modality on
calibration patients whose modality was hidden and imputed, in the decoder's standardised space
(where the training mean is 0):

* **mean**: ``mu' = c + b_f (mu - c)`` with ``c`` = training mean (0 in decoder space) and a
  slope ``b_f`` per feature: the least-squares slope through ``c`` pooled over the features
  (``"global"``), or per-feature slopes shrunk towards their precision-weighted mean by empirical Bayes
  (random-effects meta-analysis, DerSimonian-Laird ``tau^2``; ``"feature"``). ``"auto"`` picks one by
  K-fold cross-validation over the calibration patients (mean squared error).
* **spread**: every draw is moved with its patient's mean, ``x' = mu' + s (x - mu)``, so the
  predictive distribution keeps its shape; ``s`` is the smallest factor whose central ``level``
  interval covers a fraction ``level`` of the calibration cells (a split-conformal scale).

``mu = E_z[loc(z)]`` is the Rao-Blackwellised predictive mean (decoder location averaged over the
``z`` draws). The draws' deviations are taken from their own per-patient average and rescaled by
``sqrt(S / (S - 1))`` (:func:`recentre`), so the recalibrated draws average exactly to ``mu'``:
otherwise the Monte-Carlo error of the draw average (``sigma / sqrt(S)``) is multiplied by ``s``
while the signal is multiplied by ``b < 1``, and it would blur the point prediction.

Shapes: ``truth``, ``mean`` are (n_patients, n_features) in decoder space (NaN in ``truth`` =
not observed), ``draws`` is (n_draws, n_patients, n_features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImputationRecalibration", "recentre", "fit_imputation_recalibration", "shrinkage_slopes",
           "spread_scale", "SLOPE_MODES"]

SLOPE_MODES = ("auto", "global", "feature", "none")


def recentre(draws: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Draws moved to average exactly ``mean``: ``mean + sqrt(S / (S - 1)) (x - xbar)``.

    Parameters
    ----------
    draws : numpy.ndarray, shape (S, n, F)
    mean : numpy.ndarray, shape (n, F)

    Returns
    -------
    numpy.ndarray, shape (S, n, F)
        With ``S = 1`` the single draw is returned unchanged.
    """
    s = draws.shape[0]
    if s < 2:
        return draws
    return mean + np.sqrt(s / (s - 1.0)) * (draws - draws.mean(axis=0))


@dataclass
class ImputationRecalibration:
    """Recalibration of one imputed modality (see module docstring).

    Attributes
    ----------
    modality : str
    slope : numpy.ndarray, shape (F,)
        ``b_f`` of ``mu' = b_f mu`` in decoder space (the training mean is 0 there); the same
        value for every feature with ``mode="global"``, all 1 with ``mode="none"``.
    spread : float
        ``s`` of ``x' = mu' + s (x - mu)``.
    mode : {"global", "feature", "none"}
        Slope model that was used.
    level : float
        Interval level ``s`` was fitted for.
    n_patients : int
        Calibration patients (with the modality hidden) that have at least one observed value.
    pooled_slope : float
        Least-squares slope pooled over features (before any choice).
    tau2 : float
        Between-feature variance of the slopes (empirical Bayes).
    cv_mse : dict[str, float]
        Cross-validated mean squared error (decoder space) of ``"none"``, ``"global"`` and
        ``"feature"`` (empty when ``mode`` was given rather than chosen).
    diagnostics : dict[str, float]
        ``coverage_before`` / ``coverage_after`` of the ``level`` interval and ``mse_before`` /
        ``mse_after`` on the calibration cells (in-sample).
    """

    modality: str
    slope: np.ndarray
    spread: float
    mode: str
    level: float
    n_patients: int
    pooled_slope: float = 1.0
    tau2: float = 0.0
    cv_mse: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)

    def apply(self, draws: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
        """Recalibrated draws ``b mu + s (x - mu)`` (decoder space), ``x`` re-centred on ``mu``.

        Parameters
        ----------
        draws : numpy.ndarray, shape (S, n, F)
        mean : numpy.ndarray, shape (n, F), optional
            Predictive mean ``mu`` (default: the mean of ``draws``).
        """
        draws = np.asarray(draws, dtype=np.float64)
        mu = draws.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
        return self.slope * mu + self.spread * (recentre(draws, mu) - mu)

    def to_config(self) -> dict[str, Any]:
        """JSON-able fields (``slope`` is stored separately as an array)."""
        return {"modality": self.modality, "spread": float(self.spread), "mode": self.mode,
                "level": float(self.level), "n_patients": int(self.n_patients),
                "pooled_slope": float(self.pooled_slope), "tau2": float(self.tau2),
                "cv_mse": {k: float(v) for k, v in self.cv_mse.items()},
                "diagnostics": {k: float(v) for k, v in self.diagnostics.items()}}

    @classmethod
    def from_config(cls, cfg: dict[str, Any], slope: np.ndarray) -> ImputationRecalibration:
        return cls(modality=cfg["modality"], slope=np.asarray(slope, dtype=np.float64), spread=float(cfg["spread"]),
                   mode=cfg["mode"], level=float(cfg["level"]), n_patients=int(cfg["n_patients"]),
                   pooled_slope=float(cfg.get("pooled_slope", 1.0)), tau2=float(cfg.get("tau2", 0.0)),
                   cv_mse=dict(cfg.get("cv_mse", {})), diagnostics=dict(cfg.get("diagnostics", {})))

    def __repr__(self) -> str:
        return (f"ImputationRecalibration({self.modality!r}: mode={self.mode}, slope median "
                f"{np.median(self.slope):.3f} (pooled {self.pooled_slope:.3f}), spread {self.spread:.3f}, "
                f"{self.n_patients} patients)")


def shrinkage_slopes(truth: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Slopes of ``truth`` on ``mean`` through the origin: per feature, pooled, and EB-shrunk.

    Parameters
    ----------
    truth, mean : numpy.ndarray, shape (n, F)
        Decoder-space truth (NaN = unobserved) and predictive mean.

    Returns
    -------
    raw : numpy.ndarray (F,)
        Per-feature least-squares slopes ``sum(y mu) / sum(mu^2)`` (NaN where undefined).
    pooled : float
        Slope pooled over every observed cell.
    tau2 : float
        DerSimonian-Laird between-feature variance of the slopes.
    shrunk : numpy.ndarray (F,)
        Empirical-Bayes slopes ``b0 + tau2 / (tau2 + v_f) (raw_f - b0)`` (``b0`` the
        precision-weighted mean of the ``raw_f``, ``v_f`` the sampling variance of ``raw_f``); ``b0``
        where ``raw_f`` is undefined (the pooled slope for every feature when fewer than 2 are defined).
    """
    y, mu = np.asarray(truth, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    obs = np.isfinite(y) & np.isfinite(mu)
    y0, m0 = np.where(obs, y, 0.0), np.where(obs, mu, 0.0)
    sxy, sxx, n = (y0 * m0).sum(0), (m0 ** 2).sum(0), obs.sum(0)
    pooled = float(sxy.sum() / sxx.sum()) if sxx.sum() > 0 else 1.0
    ok = (sxx > 1e-12) & (n >= 3)
    raw = np.full(y.shape[1], np.nan)
    raw[ok] = sxy[ok] / sxx[ok]
    if ok.sum() < 2:
        return raw, pooled, 0.0, np.full(y.shape[1], pooled)
    resid = np.where(obs, y0 - np.where(ok, np.nan_to_num(raw), 0.0) * m0, 0.0)
    sigma2 = (resid ** 2).sum(0) / np.maximum(n - 1, 1)
    v = np.where(ok, np.maximum(sigma2, 1e-12) / np.where(ok, sxx, 1.0), np.inf)
    w = np.where(ok, 1.0 / v, 0.0)
    b0 = float((w * np.nan_to_num(raw)).sum() / w.sum())
    q = float((w * (np.nan_to_num(raw) - b0) ** 2)[ok].sum())
    denom = w.sum() - (w ** 2).sum() / w.sum()
    tau2 = max(0.0, (q - (ok.sum() - 1)) / denom) if denom > 0 else 0.0
    shrunk = np.full(y.shape[1], b0)
    shrunk[ok] = b0 + tau2 / (tau2 + v[ok]) * (raw[ok] - b0)
    return raw, pooled, tau2, shrunk


def _slopes(truth: np.ndarray, mean: np.ndarray, mode: str) -> np.ndarray:
    f = truth.shape[1]
    if mode == "none":
        return np.ones(f)
    _, pooled, _, shrunk = shrinkage_slopes(truth, mean)
    slope = np.full(f, pooled) if mode == "global" else shrunk
    return np.maximum(slope, 0.0)   # a negative slope would invert the prediction: fall back to the mean


def spread_scale(truth: np.ndarray, mean: np.ndarray, draws: np.ndarray, slope: np.ndarray,
                 level: float = 0.9) -> float:
    """Smallest ``s`` whose central ``level`` intervals of ``b mu + s (x - mu)`` cover ``level`` of the cells.

    Parameters
    ----------
    truth, mean : numpy.ndarray, shape (n, F)
    draws : numpy.ndarray, shape (S, n, F)
    slope : numpy.ndarray, shape (F,)
    level : float

    Returns
    -------
    float
        The ``level`` empirical quantile of the per-cell scale needed to cover the truth.
    """
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [a, 1.0 - a], axis=0)
    r = truth - slope * mean
    up, down = np.maximum(hi - mean, 1e-12), np.maximum(mean - lo, 1e-12)
    need = np.where(r >= 0, r / up, -r / down)
    need = need[np.isfinite(need)]
    if need.size == 0:
        return 1.0
    return float(np.quantile(need, level))


def _coverage(truth, mean, draws, slope, spread, level) -> float:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [a, 1.0 - a], axis=0)
    c = slope * mean
    lo, hi = c + spread * (lo - mean), c + spread * (hi - mean)
    obs = np.isfinite(truth)
    return float(((truth >= lo) & (truth <= hi))[obs].mean())


def fit_imputation_recalibration(modality: str, truth: np.ndarray, mean: np.ndarray, draws: np.ndarray,
                                 mode: str = "global", level: float = 0.9, folds: int = 5, seed: int = 0,
                                 min_patients: int = 10) -> ImputationRecalibration:
    """Fit the slope(s) and spread of one modality on calibration patients.

    Parameters
    ----------
    modality : str
    truth : numpy.ndarray, shape (n, F)
        Hidden values in decoder space (NaN = not observed).
    mean : numpy.ndarray, shape (n, F)
        Predictive mean of the imputation (decoder space).
    draws : numpy.ndarray, shape (S, n, F)
        Predictive draws (decoder space); re-centred on ``mean`` (:func:`recentre`) before use.
    mode : {"global", "auto", "feature", "none"}
        Slope model; ``"auto"`` chooses ``"global"`` or ``"feature"`` by ``folds``-fold
        cross-validation over patients. Default ``"global"`` (docs/imputation.md: on held-out
        patients of tcga_gbmlgg it was as good as or better than the alternatives).
    level : float
        Interval level the spread is fitted for.
    folds : int
    seed : int
        Seeds the fold assignment.
    min_patients : int
        Fewer calibration patients with an observed value raise ``ValueError``.

    Returns
    -------
    ImputationRecalibration
    """
    if mode not in SLOPE_MODES:
        raise ValueError(f"mode={mode!r} is not supported; use one of {SLOPE_MODES}.")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.9.")
    truth = np.asarray(truth, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    draws = np.asarray(draws, dtype=np.float64)
    if truth.ndim != 2 or mean.shape != truth.shape or draws.shape[1:] != truth.shape:
        raise ValueError(f"truth {truth.shape} and mean {mean.shape} must be (n, F) and draws {draws.shape} "
                         "(S, n, F) with the same n and F.")
    if draws.shape[0] < 2:
        raise ValueError(f"draws has {draws.shape[0]} draw(s); the spread scales their central {level:.0%} "
                         "interval and needs at least 2 draws (use >= 100, as many as impute() will draw).")
    draws = recentre(draws, mean)
    n = int(np.isfinite(truth).any(axis=1).sum())   # patients with an observed value (all-NaN rows carry none)
    if n < min_patients:
        raise ValueError(f"Only {n} calibration patient(s) have an observed value of {modality!r}; the "
                         f"recalibration needs at least {min_patients}. Pass more patients that have it (e.g. a "
                         "larger validation split).")
    cv: dict[str, float] = {}
    if mode == "auto":
        k = int(min(max(2, folds), n))
        fold = np.random.RandomState(seed).permutation(truth.shape[0]) % k
        sq = {c: 0.0 for c in ("none", "global", "feature")}
        cnt = 0
        for j in range(k):
            tr, te = fold != j, fold == j
            obs = np.isfinite(truth[te])
            cnt += int(obs.sum())
            for c in sq:
                b = _slopes(truth[tr], mean[tr], c)
                sq[c] += float((((truth[te] - b * mean[te]) ** 2)[obs]).sum())
        cv = {c: v / max(cnt, 1) for c, v in sq.items()}
        mode = "feature" if cv["feature"] < cv["global"] else "global"
    raw, pooled, tau2, _ = shrinkage_slopes(truth, mean)
    slope = _slopes(truth, mean, mode)
    spread = spread_scale(truth, mean, draws, slope, level)
    obs = np.isfinite(truth)
    diag = {"coverage_before": _coverage(truth, mean, draws, np.ones_like(slope), 1.0, level),
            "coverage_after": _coverage(truth, mean, draws, slope, spread, level),
            "mse_before": float(((truth - mean) ** 2)[obs].mean()),
            "mse_after": float(((truth - slope * mean) ** 2)[obs].mean()),
            "mse_mean_fill": float((truth ** 2)[obs].mean())}
    return ImputationRecalibration(modality=modality, slope=slope, spread=spread, mode=mode, level=float(level),
                                   n_patients=int(n), pooled_slope=pooled, tau2=float(tau2), cv_mse=cv,
                                   diagnostics=diag)
