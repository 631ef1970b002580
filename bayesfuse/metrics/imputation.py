"""Imputation metrics: compare held-out true values with posterior draws of the imputed values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse.exceptions import DataError

__all__ = ["ImputationMetrics", "imputation_metrics", "BinaryImputationMetrics", "binary_imputation_metrics"]


@dataclass(frozen=True)
class ImputationMetrics:
    """Result of :func:`imputation_metrics`.

    Attributes
    ----------
    pearson_r : float
        Median over features of the Pearson correlation between the true values and the posterior mean
        (features with a constant truth or prediction have no correlation and are skipped).
    rmse : float
        Median over features of the RMSE of the posterior mean.
    coverage_50, coverage_90 : float
        Share of (patient, feature) entries whose true value lies inside the central 50% / 90%
        posterior predictive interval (ideal: 0.5 / 0.9).
    n_features : int
        Features with at least one observed true value.
    per_feature : pandas.DataFrame
        One row per feature: ``pearson_r, rmse, coverage_50, coverage_90, n``.
    """

    pearson_r: float
    rmse: float
    coverage_50: float
    coverage_90: float
    n_features: int
    per_feature: pd.DataFrame


def imputation_metrics(true, draws) -> ImputationMetrics:
    """Accuracy and calibration of imputed values.

    Parameters
    ----------
    true : array, shape (n, F)
        Held-out true values; NaN marks entries without ground truth (ignored).
    draws : array, shape (S, n, F)
        Posterior (predictive) draws of the same entries; must be finite.

    Returns
    -------
    ImputationMetrics

    Notes
    -----
    Per-feature Pearson r is hand-vectorised (NaN-aware); checked against ``scipy.stats.pearsonr``.
    Interval ends are ``numpy.quantile`` (linear) of the draws.
    """
    y = np.asarray(true, dtype=np.float64)
    d = np.asarray(draws, dtype=np.float64)
    if y.ndim != 2:
        raise DataError(f"true must be 2-D (n, F), got shape {y.shape}.")
    if d.ndim != 3 or d.shape[1:] != y.shape:
        raise DataError(f"draws must have shape (S, n, F) = (S, {y.shape[0]}, {y.shape[1]}), got {d.shape}; "
                        "stack the posterior draws on the first axis.")
    if d.shape[0] < 2:
        raise DataError("draws needs at least 2 posterior draws to form predictive intervals.")
    if not np.all(np.isfinite(d)):
        raise DataError("draws contains NaN or infinite values; the imputation model produced invalid draws.")
    if np.any(np.isinf(y)):
        raise DataError("true contains infinite values; use NaN for entries without ground truth.")
    obs = ~np.isnan(y)
    if not obs.any():
        raise DataError("true is all NaN; there is nothing to compare the imputations with.")
    mean = d.mean(axis=0)
    n_f = obs.sum(axis=0)
    yz, mz = np.where(obs, y, 0.0), np.where(obs, mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse = np.sqrt(np.sum((yz - mz) ** 2, axis=0) / n_f)
        yc = np.where(obs, y - yz.sum(axis=0) / n_f, 0.0)
        mc = np.where(obs, mean - mz.sum(axis=0) / n_f, 0.0)
        syy, smm = np.sum(yc**2, axis=0), np.sum(mc**2, axis=0)
        scale = np.maximum(np.max(np.abs(yz), axis=0), np.max(np.abs(mz), axis=0)) + 1e-300
        const = (syy <= (1e-12 * scale) ** 2 * n_f) | (smm <= (1e-12 * scale) ** 2 * n_f) | (n_f < 2)
        r = np.where(const, np.nan, np.sum(yc * mc, axis=0) / np.sqrt(syy * smm))
    r = np.clip(r, -1.0, 1.0)
    q = np.quantile(d, [0.25, 0.75, 0.05, 0.95], axis=0)
    in50 = (y >= q[0]) & (y <= q[1]) & obs
    in90 = (y >= q[2]) & (y <= q[3]) & obs
    with np.errstate(invalid="ignore", divide="ignore"):
        per = pd.DataFrame({"pearson_r": r, "rmse": rmse, "coverage_50": in50.sum(axis=0) / n_f,
                            "coverage_90": in90.sum(axis=0) / n_f, "n": n_f})
    has = n_f > 0
    return ImputationMetrics(
        pearson_r=float(np.nanmedian(r[has])) if np.any(np.isfinite(r[has])) else float("nan"),
        rmse=float(np.median(rmse[has])),
        coverage_50=float(in50.sum() / obs.sum()),
        coverage_90=float(in90.sum() / obs.sum()),
        n_features=int(has.sum()),
        per_feature=per,
    )


@dataclass(frozen=True)
class BinaryImputationMetrics:
    """Result of :func:`binary_imputation_metrics` (imputed 0/1 features, e.g. mutations).

    Attributes
    ----------
    auroc : float
        Median over scored features of the per-feature AUROC of the predicted probability
        (0.5 = no better than a constant such as the train prevalence).
    brier : float
        Mean squared error of the probability over all observed cells.
    log_loss : float
        Mean negative log-likelihood (nats) of the observed 0/1 values over all observed cells.
    n_scored : int
        Features with at least ``min_positives`` ones and ``min_positives`` zeros among the
        observed cells (AUROC is only scored on those).
    per_feature : pandas.DataFrame
        ``auroc`` (NaN when not scored), ``prevalence``, ``n``.
    """

    auroc: float
    brier: float
    log_loss: float
    n_scored: int
    per_feature: pd.DataFrame


def binary_imputation_metrics(true, prob, min_positives: int = 3) -> BinaryImputationMetrics:
    """Discrimination and calibration of imputed binary values.

    Pearson r and RMSE of a rare 0/1 feature say little (a gene mutated in 1 of 113 patients has
    RMSE ~ sqrt(1/113) for any near-zero predictor); this scores the probability instead.

    Parameters
    ----------
    true : array, shape (n, F)
        Held-out 0/1 values; NaN = no ground truth (ignored).
    prob : array, shape (n, F)
        Predicted ``P(x = 1)`` in [0, 1].
    min_positives : int
        Minimum number of ones and of zeros for a feature's AUROC to be scored.

    Returns
    -------
    BinaryImputationMetrics
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    y = np.asarray(true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise DataError(f"true and prob must both have shape (n, F); got {y.shape} and {p.shape}.")
    obs = ~np.isnan(y)
    if not obs.any():
        raise DataError("true is all NaN; there is nothing to compare the imputations with.")
    if np.any((y[obs] != 0) & (y[obs] != 1)):
        raise DataError("true must hold 0/1 values (NaN = unobserved) for binary imputation metrics.")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DataError("prob must be finite probabilities in [0, 1].")
    auc = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        o = obs[:, j]
        pos = int(y[o, j].sum())
        if pos >= min_positives and o.sum() - pos >= min_positives:
            auc[j] = roc_auc_score(y[o, j], p[o, j])
    pc = np.clip(p, 1e-12, 1 - 1e-12)
    ll = -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
    n_f = obs.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prev = np.where(obs, y, 0.0).sum(axis=0) / n_f
    scored = np.isfinite(auc)
    return BinaryImputationMetrics(
        auroc=float(np.median(auc[scored])) if scored.any() else float("nan"),
        brier=float(np.mean((p[obs] - y[obs]) ** 2)),
        log_loss=float(np.mean(ll[obs])),
        n_scored=int(scored.sum()),
        per_feature=pd.DataFrame({"auroc": auc, "prevalence": prev, "n": n_f}),
    )
