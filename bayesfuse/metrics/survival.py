"""Survival metrics for right-censored data.

Conventions
-----------
* ``time`` (n,) are positive follow-up times, ``event`` (n,) is 1/True for an observed event and
  0/False for censoring.
* ``risk`` (n,): higher means an *earlier* event.
* Survival probabilities are arrays ``surv`` shaped (n, T) evaluated on a strictly increasing grid
  ``times`` (T,). Between grid points a survival curve is read as a right-continuous step function
  (see :func:`surv_at`).
* Inverse-probability-of-censoring weights (IPCW) use the Kaplan-Meier estimate ``G`` of the
  censoring distribution fitted on the **training** outcomes, with events counted before censorings
  at tied times, read as a right-continuous step function ``G(t) = P(C > t)`` -- the conventions of
  scikit-survival, against which the IPCW metrics are tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chisquare
from sklearn.metrics import roc_auc_score

from bayesfuse.exceptions import DataError
from bayesfuse.metrics._validation import (
    as_float_array,
    check_binary,
    check_same_length,
    check_surv,
    check_survival,
    check_times,
)

__all__ = [
    "CumulativeDynamicAUC",
    "DCalibration",
    "IntervalCoverage",
    "SurvivalMetrics",
    "brier_score",
    "concordance_harrell",
    "concordance_uno",
    "cumulative_dynamic_auc",
    "d_calibration",
    "integrated_brier_score",
    "interval_coverage",
    "km_greenwood_se",
    "km_calibration",
    "surv_at",
    "survival_metrics",
]

TIED_TOL = 1e-8


# ----------------------------------------------------------------------------------------- helpers
def surv_at(surv, times, t) -> np.ndarray:
    """Read survival curves at given times as right-continuous step functions of the grid.

    Parameters
    ----------
    surv : array, shape (n, T)
        Survival probabilities on the grid ``times``.
    times : array, shape (T,)
        Strictly increasing grid.
    t : float or array, shape (n,)
        One time for everybody, or one time per patient (e.g. their own follow-up time).

    Returns
    -------
    np.ndarray, shape (n,)
        ``S_i(t_i) = surv[i, k]`` with ``k`` the last grid point ``<= t_i``; 1 before the first grid point;
        the last column beyond the grid.
    """
    grid = check_times(times)
    s = as_float_array(surv, "surv", 2)
    s = check_surv(s, s.shape[0], grid.shape[0])
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (s.shape[0],))
    k = np.searchsorted(grid, tt, side="right") - 1
    out = np.ones(s.shape[0])
    ok = k >= 0
    out[ok] = s[np.flatnonzero(ok), k[ok]]
    return out


class _CensoringKM:
    """Kaplan-Meier estimate of the censoring survival ``G(t) = P(C > t)`` from training outcomes.

    Events are counted before censorings at tied times (they leave the risk set first), as in
    ``sksurv.nonparametric.CensoringDistributionEstimator``.
    """

    def __init__(self, time: np.ndarray, event: np.ndarray):
        uniq, inv = np.unique(time, return_inverse=True)
        n_total = np.bincount(inv).astype(np.float64)
        n_event = np.bincount(inv, weights=event.astype(np.float64))
        n_cens = n_total - n_event
        at_risk = time.shape[0] - np.r_[0.0, np.cumsum(n_total)[:-1]] - n_event
        ratio = np.divide(n_cens, at_risk, out=np.zeros_like(n_cens), where=at_risk > 0)
        self.times = uniq
        self.surv = np.cumprod(1.0 - ratio)
        self.all_events = not np.any(~event)

    def __call__(self, t: np.ndarray, what: str) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.all_events:
            return np.ones_like(t)
        beyond = t > self.times[-1]
        if np.any(beyond) and self.surv[-1] > 0:
            raise DataError(
                f"{what} needs the censoring distribution at t = {t[beyond].max():.6g}, beyond the last "
                f"training time {self.times[-1]:.6g} where it is not identified; restrict the evaluation "
                "(pass tau or a shorter `times` grid) to the training follow-up.")
        k = np.searchsorted(self.times, t, side="right") - 1
        return np.where(beyond, 0.0, np.where(k >= 0, self.surv[np.clip(k, 0, None)], 1.0))


def _train_test(train_time, train_event, time, event):
    tr_t, tr_e = check_survival(train_time, train_event, prefix="train_")
    t, e = check_survival(time, event)
    return tr_t, tr_e, t, e


def _check_risk(risk, n: int, name: str = "risk") -> np.ndarray:
    r = as_float_array(risk, name, 1)
    check_same_length(time=np.empty(n), **{name: r})
    return r


def _check_eval_times(times, time: np.ndarray, what: str) -> np.ndarray:
    g = check_times(times)
    if g.min() < time.min() or g.max() >= time.max():
        raise DataError(f"{what}: all `times` must lie within the test follow-up [{time.min():.6g}, "
                        f"{time.max():.6g}) (got [{g.min():.6g}, {g.max():.6g}]); trim the grid, e.g. to "
                        "the 10th-80th percentiles of the test times.")
    return g


# ------------------------------------------------------------------------------------- concordance
def concordance_harrell(time, event, risk) -> float:
    """Harrell's concordance index.

    Library-backed: ``lifelines.utils.concordance_index`` (which expects scores where *higher means
    longer survival*, so it receives ``-risk``). Tied risks count 1/2.

    Parameters
    ----------
    time : array, shape (n,)
    event : array of bool, shape (n,)
    risk : array, shape (n,)
        Higher = earlier event.

    Returns
    -------
    float in [0, 1]; 0.5 is random ordering.
    """
    from lifelines.utils import concordance_index

    t, e = check_survival(time, event)
    r = _check_risk(risk, t.shape[0])
    if not np.any(e):
        raise DataError("concordance_harrell: no events in `event`; the C-index needs at least one event.")
    return float(concordance_index(t, -r, e))


def concordance_uno(train_time, train_event, time, event, risk, tau: float | None = None) -> float:
    """Uno's IPCW concordance index (Uno et al. 2011, Stat. Med. 30:1105).

    ``C = sum_{i,j} w_i 1[t_i < t_j, t_i < tau] (1[r_i > r_j] + 1/2 1[r_i = r_j]) / sum_{i,j} w_i
    1[t_i < t_j, t_i < tau]`` over events ``i``, with ``w_i = G(t_i)^-2`` and ``G`` the Kaplan-Meier
    estimate of the censoring survival fitted on the *training* outcomes. A patient censored at the very
    time of an event counts as outliving it; risks within 1e-8 are tied.

    Parameters
    ----------
    train_time, train_event : array, shape (n_train,)
        Training outcomes (for the censoring distribution).
    time, event : array, shape (n,)
        Test outcomes.
    risk : array, shape (n,)
        Higher = earlier event.
    tau : float, optional
        Truncation time: only events before ``tau`` are used as the earlier member of a pair.
        Choose it where ``G`` is not too small (and within the training follow-up).

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Hand-written; checked against ``sksurv.metrics.concordance_index_ipcw`` (tests only).
    """
    tr_t, tr_e, t, e = _train_test(train_time, train_event, time, event)
    r = _check_risk(risk, t.shape[0])
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise DataError(f"tau must be a positive finite time, got {tau!r}.")
    G = _CensoringKM(tr_t, tr_e)
    idx = np.flatnonzero(e if tau is None else (e & (t < tau)))
    if idx.size == 0:
        raise DataError("concordance_uno: no events (before tau); nothing to compare.")
    g = G(t[idx], "concordance_uno")
    if np.any(g <= 0):
        raise DataError("concordance_uno: the censoring survival is 0 at some event time; pass a smaller "
                        "tau so that every weight is finite.")
    w = 1.0 / g**2
    num = den = 0.0
    for start in range(0, idx.size, 512):  # bounded memory: (512, n) blocks
        sl = idx[start:start + 512]
        ti, ri = t[sl, None], r[sl, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & ~e[None, :])
        tie = np.abs(r[None, :] - ri) <= TIED_TOL
        conc = (r[None, :] < ri) & ~tie
        score = np.sum(comparable & conc, axis=1) + 0.5 * np.sum(comparable & tie, axis=1)
        wi = w[start:start + 512]
        num += float(np.sum(wi * score))
        den += float(np.sum(wi * comparable.sum(axis=1)))
    if den == 0:
        raise DataError("concordance_uno: no comparable pairs (every event is the last follow-up).")
    return num / den


# ------------------------------------------------------------------------------ time-dependent AUC
@dataclass(frozen=True)
class CumulativeDynamicAUC:
    """Cumulative/dynamic AUC per time and its KM-weighted mean.

    Attributes
    ----------
    times : np.ndarray, shape (T,)
    auc : np.ndarray, shape (T,)
    mean_auc : float
        ``sum_k AUC(t_k) (S(t_{k-1}) - S(t_k)) / (1 - S(t_T))`` with ``S`` the test Kaplan-Meier curve
        (Lambert & Chevret 2014); equals ``auc[0]`` when T = 1.
    """

    times: np.ndarray
    auc: np.ndarray
    mean_auc: float


def cumulative_dynamic_auc(train_time, train_event, time, event, risk, times) -> CumulativeDynamicAUC:
    """IPCW cumulative/dynamic time-dependent AUC (Uno et al. 2007; Hung & Chiang 2010).

    At each ``t``: cases are events with ``t_i <= t`` weighted by ``1 / G(t_i)`` (``G`` from training
    data), controls are patients with ``t_j > t``; patients censored before ``t`` are left out.
    ``AUC(t)`` is the weighted share of case-control pairs ordered correctly (ties count 1/2), computed
    with ``sklearn.metrics.roc_auc_score(sample_weight=...)``.

    Parameters
    ----------
    train_time, train_event : array, shape (n_train,)
    time, event : array, shape (n,)
    risk : array, shape (n,) or (n, T)
        Higher = earlier event; a 2-D array gives one risk per time of ``times`` (e.g. 1 - S(t)).
    times : array, shape (T,)
        Strictly increasing, within the test follow-up ``[min(time), max(time))``.

    Returns
    -------
    CumulativeDynamicAUC

    Notes
    -----
    IPCW weights hand-written; checked against ``sksurv.metrics.cumulative_dynamic_auc`` (tests only).
    """
    from lifelines import KaplanMeierFitter

    tr_t, tr_e, t, e = _train_test(train_time, train_event, time, event)
    grid = _check_eval_times(times, t, "cumulative_dynamic_auc")
    r = as_float_array(risk, "risk", (1, 2))
    if r.ndim == 1:
        r = np.repeat(r[:, None], grid.shape[0], axis=1)
    if r.shape != (t.shape[0], grid.shape[0]):
        raise DataError(f"risk must have shape (n,) or (n, T) = ({t.shape[0]}, {grid.shape[0]}), got "
                        f"{r.shape}; one row per patient, one column per time of `times`.")
    G = _CensoringKM(tr_t, tr_e)
    aucs = np.empty(grid.shape[0])
    for k, tk in enumerate(grid):
        case = e & (t <= tk)
        control = t > tk
        if not case.any() or not control.any():
            raise DataError(f"cumulative_dynamic_auc: no {'events' if not case.any() else 'patients'} "
                            f"{'by' if not case.any() else 'beyond'} t = {tk:.6g}; trim `times`.")
        g = G(t[case], "cumulative_dynamic_auc")
        if np.any(g <= 0):
            raise DataError("cumulative_dynamic_auc: censoring survival is 0 at some event time; trim `times`.")
        keep = case | control
        w = np.ones(t.shape[0])
        w[case] = 1.0 / g
        aucs[k] = roc_auc_score(case[keep].astype(int), r[keep, k], sample_weight=w[keep])
    if grid.shape[0] == 1:
        mean = float(aucs[0])
    else:
        km = KaplanMeierFitter().fit(t, e).survival_function_at_times(grid).to_numpy()
        d = -np.diff(np.r_[1.0, km])
        mean = float(np.sum(aucs * d) / (1.0 - km[-1]))
    return CumulativeDynamicAUC(times=grid, auc=aucs, mean_auc=mean)


# ------------------------------------------------------------------------------------ Brier score
def brier_score(train_time, train_event, time, event, surv, times) -> np.ndarray:
    """IPCW time-dependent Brier score (Graf et al. 1999).

    ``BS(t) = mean_i [ S_i(t)^2 1[t_i <= t, event_i] / G(t_i) + (1 - S_i(t))^2 1[t_i > t] / G(t) ]``
    with ``G`` the censoring Kaplan-Meier curve of the training data (a weight with ``G = 0`` is 0).

    Parameters
    ----------
    train_time, train_event : array, shape (n_train,)
    time, event : array, shape (n,)
    surv : array, shape (n, T)
        Predicted survival probabilities at ``times``.
    times : array, shape (T,)
        Strictly increasing, within the test follow-up ``[min(time), max(time))``.

    Returns
    -------
    np.ndarray, shape (T,)

    Notes
    -----
    Hand-written; checked against ``sksurv.metrics.brier_score`` (tests only).
    """
    tr_t, tr_e, t, e = _train_test(train_time, train_event, time, event)
    grid = _check_eval_times(times, t, "brier_score")
    s = check_surv(surv, t.shape[0], grid.shape[0])
    G = _CensoringKM(tr_t, tr_e)
    g_grid = G(grid, "brier_score")
    need = e & (t <= grid[-1])
    g_own = np.ones_like(t)
    g_own[need] = G(t[need], "brier_score")
    inv_own = np.divide(1.0, g_own, out=np.zeros_like(g_own), where=g_own > 0)
    inv_grid = np.divide(1.0, g_grid, out=np.zeros_like(g_grid), where=g_grid > 0)
    case = e[:, None] & (t[:, None] <= grid[None, :])
    control = t[:, None] > grid[None, :]
    terms = s**2 * case * inv_own[:, None] + (1.0 - s) ** 2 * control * inv_grid[None, :]
    return terms.mean(axis=0)


def integrated_brier_score(train_time, train_event, time, event, surv, times) -> float:
    """Integrated Brier score: trapezoidal integral of :func:`brier_score` over ``times``, divided by
    ``times[-1] - times[0]``.

    Parameters
    ----------
    train_time, train_event, time, event, surv, times
        As in :func:`brier_score`; ``times`` needs at least two points.

    Returns
    -------
    float

    Notes
    -----
    Hand-written; checked against ``sksurv.metrics.integrated_brier_score`` (tests only).
    """
    grid = check_times(times)
    if grid.shape[0] < 2:
        raise DataError("integrated_brier_score needs at least two times; use brier_score for one time.")
    bs = brier_score(train_time, train_event, time, event, surv, grid)
    return float(np.trapezoid(bs, grid) / (grid[-1] - grid[0]))


# ------------------------------------------------------------------------------------ D-calibration
@dataclass(frozen=True)
class DCalibration:
    """Result of :func:`d_calibration`.

    Attributes
    ----------
    statistic : float
        Pearson chi-square statistic against the uniform histogram (``n_bins - 1`` d.o.f.).
    p_value : float
        Large (e.g. > 0.05) means no evidence of miscalibration.
    counts : np.ndarray, shape (n_bins,)
        (Fractional) number of patients per bin; bin ``k`` is ``[edges[k], edges[k+1])``.
    edges : np.ndarray, shape (n_bins + 1,)
    n : int
    """

    statistic: float
    p_value: float
    counts: np.ndarray
    edges: np.ndarray
    n: int


def d_calibration(surv_at_own_time, event, n_bins: int = 10) -> DCalibration:
    """Distribution calibration (D-calibration) of Haider et al. (2020, JMLR 21(85)).

    If the predicted survival curves are right, ``S_i(T_i)`` is uniform on [0, 1]. Each patient adds one
    unit of mass to a histogram of ``n_bins`` equal-width bins of [0, 1]:

    * an event at ``t_i`` puts its mass in the bin of ``S_i(t_i)``;
    * a patient censored at ``c_i`` with ``s = S_i(c_i)`` (so ``S_i(T_i) < s``) spreads its mass uniformly
      over ``[0, s]`` (the "blurred" version): the bin ``[a, b)`` holding ``s`` gets ``(s - a) / s`` and
      every bin below gets ``(1 / n_bins) / s``; ``s = 0`` puts all mass in the lowest bin.

    The histogram is compared with the uniform one by Pearson's chi-square test
    (``scipy.stats.chisquare``).

    Parameters
    ----------
    surv_at_own_time : array, shape (n,)
        ``S_i(t_i)``: predicted survival of each patient at their own event/censoring time
        (see :func:`surv_at`).
    event : array of bool, shape (n,)
    n_bins : int, default 10

    Returns
    -------
    DCalibration

    Notes
    -----
    Hand-written; checked against a literal per-patient implementation of Haider et al.'s Eqs. and, for
    uncensored data, against ``numpy.histogram`` + ``scipy.stats.chisquare`` (tests).
    """
    s = as_float_array(surv_at_own_time, "surv_at_own_time", 1)
    e = check_binary(event, "event")
    check_same_length(surv_at_own_time=s, event=e)
    if np.any(s < -1e-6) or np.any(s > 1 + 1e-6):
        raise DataError("surv_at_own_time must be survival probabilities in [0, 1].")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise DataError(f"n_bins must be an integer >= 2, got {n_bins!r}.")
    s = np.clip(s, 0.0, 1.0)
    B = int(n_bins)
    edges = np.linspace(0.0, 1.0, B + 1)
    b = np.minimum(np.searchsorted(edges, s, side="right") - 1, B - 1)  # [a, b) bins, 1 in the top one
    counts = np.bincount(b[e], minlength=B).astype(np.float64)
    sc, bc = s[~e], b[~e]
    pos = sc > 0
    # mass in own bin
    counts += np.bincount(bc[pos], weights=(sc[pos] - edges[bc[pos]]) / sc[pos], minlength=B)
    counts[0] += np.sum(~pos)
    # mass 1/(B s) in every bin strictly below: accumulate via a reversed cumulative sum
    below = np.bincount(bc[pos], weights=1.0 / (B * sc[pos]), minlength=B)
    counts += np.cumsum(below[::-1])[::-1] - below
    stat, p = chisquare(counts)
    return DCalibration(statistic=float(stat), p_value=float(p), counts=counts, edges=edges,
                        n=int(s.shape[0]))


# ------------------------------------------------------------------------------ KM calibration
def _risk_groups(risk: np.ndarray, groups: int) -> np.ndarray:
    if not isinstance(groups, (int, np.integer)) or groups < 1 or groups > risk.shape[0]:
        raise DataError(f"groups must be an integer between 1 and the number of patients, got {groups!r}.")
    ranks = pd.Series(risk).rank(method="first").to_numpy()
    return pd.qcut(ranks, groups, labels=False).astype(np.int64)


def _km_at(t: np.ndarray, e: np.ndarray, horizon: float, alpha: float) -> tuple[float, float, float]:
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter(alpha=alpha).fit(t, e)
    km = float(kmf.survival_function_at_times(horizon).iloc[0])
    ci = kmf.confidence_interval_survival_function_
    row = ci.loc[ci.index <= horizon].iloc[-1]
    return km, float(row.iloc[0]), float(row.iloc[1])


def km_calibration(time, event, surv, times, horizon: float, groups: int = 3,
                   alpha: float = 0.05) -> pd.DataFrame:
    """Grouped calibration at a horizon: mean predicted survival vs Kaplan-Meier per risk group.

    Patients are split into ``groups`` equal-size groups by predicted risk ``1 - S_i(horizon)``
    (tertiles by default); in each group the mean predicted ``S(horizon)`` is set against the
    Kaplan-Meier estimate (``lifelines.KaplanMeierFitter``) and its pointwise ``1 - alpha``
    (exponential Greenwood) confidence interval.

    Parameters
    ----------
    time, event : array, shape (n,)
    surv : array, shape (n, T)
    times : array, shape (T,)
    horizon : float
        Evaluation time; ``S(horizon)`` is read from the grid as a step function (:func:`surv_at`).
    groups : int, default 3
    alpha : float, default 0.05

    Returns
    -------
    pandas.DataFrame
        One row per group (0 = lowest predicted risk) with columns ``group, n, n_events, risk_min,
        risk_max, predicted, km, km_lower, km_upper``.
    """
    t, e = check_survival(time, event)
    grid = check_times(times)
    s = check_surv(surv, t.shape[0], grid.shape[0])
    if not (np.isfinite(horizon) and horizon > 0):
        raise DataError(f"horizon must be a positive time, got {horizon!r}.")
    s_h = surv_at(s, grid, horizon)
    risk = 1.0 - s_h
    grp = _risk_groups(risk, groups)
    rows = []
    for g in range(int(grp.max()) + 1):
        m = grp == g
        km, lo, hi = _km_at(t[m], e[m], horizon, alpha)
        rows.append({"group": g, "n": int(m.sum()), "n_events": int(e[m].sum()),
                     "risk_min": float(risk[m].min()), "risk_max": float(risk[m].max()),
                     "predicted": float(s_h[m].mean()), "km": km, "km_lower": lo, "km_upper": hi})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class IntervalCoverage:
    """Result of :func:`interval_coverage`.

    Attributes
    ----------
    coverage : float
        Share of (horizon, risk group) cells whose KM estimate lies in the credible band.
    prob : float
        Mass of the central credible band.
    table : pandas.DataFrame
        One row per (horizon, group): ``horizon, group, n, km, lower, upper, inside``.
    """

    coverage: float
    prob: float
    table: pd.DataFrame


def km_greenwood_se(time, event, horizon: float) -> float:
    """Greenwood standard error of the Kaplan-Meier estimate at ``horizon``.

    ``se = S(h) * sqrt(sum_{t_j <= h} d_j / (n_j (n_j - d_j)))`` over the distinct event times
    (``lifelines`` event table); ``0`` before the first event; ``nan`` once every patient at risk
    has had the event (``n_j = d_j``, S = 0).

    Parameters
    ----------
    time, event : array, shape (n,)
    horizon : float

    Returns
    -------
    float
    """
    from lifelines import KaplanMeierFitter

    t, e = check_survival(time, event)
    kmf = KaplanMeierFitter().fit(t, e)
    tab = kmf.event_table
    tab = tab.loc[(tab.index <= horizon) & (tab["observed"] > 0)]
    n, d = tab["at_risk"].to_numpy(float), tab["observed"].to_numpy(float)
    s = float(kmf.survival_function_at_times(horizon).iloc[0])
    if np.any(n == d):
        return float("nan")
    return float(s * np.sqrt(np.sum(d / (n * (n - d)))))


def interval_coverage(time, event, surv_draws, times, horizons, groups: int = 3,
                      prob: float = 0.9, km_error: bool = False, seed: int = 0) -> IntervalCoverage:
    """Share of risk groups whose Kaplan-Meier estimate falls in the credible band of their predictions.

    For each horizon, patients are grouped by posterior-mean predicted risk ``1 - S(horizon)``; for each
    group the group-mean predicted survival is computed per draw, and its central ``prob`` interval is
    compared with the group's Kaplan-Meier estimate (``lifelines``).

    The credible band is for the group's *expected* survival; the KM estimate carries its own sampling
    error, so even a perfectly calibrated model covers KM less often than ``prob`` (the more so the
    narrower the band). ``km_error=True`` compares KM with the posterior *predictive* band of the KM
    estimate instead: each draw of the group mean plus Normal noise with the group's Greenwood standard
    error (:func:`km_greenwood_se`, 20 noise draws per posterior draw, ``seed``), which a calibrated
    model covers about ``prob`` of the time.

    Parameters
    ----------
    time, event : array, shape (n,)
    surv_draws : array, shape (S, n, T)
        Posterior draws of each patient's survival curve on ``times``.
    times : array, shape (T,)
    horizons : float or array, shape (H,)
    groups : int, default 3
    prob : float, default 0.9
    km_error : bool, default False
        Widen the band by the KM estimate's sampling error (predictive coverage, see above).
    seed : int, default 0
        Seeds the KM-noise draws (``km_error=True`` only).

    Returns
    -------
    IntervalCoverage
    """
    t, e = check_survival(time, event)
    grid = check_times(times)
    d = as_float_array(surv_draws, "surv_draws", 3)
    if d.shape[1:] != (t.shape[0], grid.shape[0]):
        raise DataError(f"surv_draws must have shape (S, n, T) = (S, {t.shape[0]}, {grid.shape[0]}), got "
                        f"{d.shape}.")
    if np.any(d < -1e-6) or np.any(d > 1 + 1e-6):
        raise DataError("surv_draws has values outside [0, 1]; pass survival probabilities.")
    if not 0 < prob < 1:
        raise DataError(f"prob must be in (0, 1), got {prob!r}.")
    hs = check_times(np.atleast_1d(horizons), "horizons")
    k = np.searchsorted(grid, hs, side="right") - 1
    rng = np.random.default_rng(seed)
    rows = []
    for h, kk in zip(hs, k):
        s_h = np.ones(d.shape[:2]) if kk < 0 else d[:, :, kk]  # (S, n)
        grp = _risk_groups(1.0 - s_h.mean(axis=0), groups)
        for g in range(int(grp.max()) + 1):
            m = grp == g
            gm = s_h[:, m].mean(axis=1)                                   # (S,)
            km, _, _ = _km_at(t[m], e[m], float(h), 0.05)
            if km_error:
                se = km_greenwood_se(t[m], e[m], float(h))
                se = 0.0 if not np.isfinite(se) else se
                gm = (gm[:, None] + se * rng.standard_normal((gm.shape[0], 20))).ravel()
            band = np.quantile(gm, [(1 - prob) / 2, (1 + prob) / 2])
            rows.append({"horizon": float(h), "group": g, "n": int(m.sum()), "km": km,
                         "lower": float(band[0]), "upper": float(band[1]),
                         "inside": bool(band[0] <= km <= band[1])})
    table = pd.DataFrame(rows)
    return IntervalCoverage(coverage=float(table["inside"].mean()), prob=float(prob), table=table)


# ------------------------------------------------------------------------------------------ bundle
@dataclass(frozen=True)
class SurvivalMetrics:
    """Summary of survival performance (see the functions of the same names)."""

    harrell_c: float
    uno_c: float
    ibs: float
    dcal_p_value: float
    n: int


def survival_metrics(train_time, train_event, time, event, surv, times, risk=None,
                     tau: float | None = None, n_bins: int = 10) -> SurvivalMetrics:
    """Harrell's C, Uno's C, integrated Brier score and D-calibration p-value in one record.

    Parameters
    ----------
    train_time, train_event : array, shape (n_train,)
    time, event : array, shape (n,)
    surv : array, shape (n, T)
        Predicted survival on ``times``.
    times : array, shape (T,)
        The IBS uses the grid points inside the test follow-up ``[min(time), max(time))``.
    risk : array, shape (n,), optional
        Defaults to minus the restricted mean survival time over the grid,
        ``-integral_0^{times[-1]} S(u) du`` (trapezoid, ``S(0) = 1``).
    tau : float, optional
        Truncation time of Uno's C.
    n_bins : int, default 10
        Bins of D-calibration; ``S_i(t_i)`` is read from the grid with :func:`surv_at`.
    """
    t, e = check_survival(time, event)
    grid = check_times(times)
    s = check_surv(surv, t.shape[0], grid.shape[0])
    if risk is None:
        risk = -np.trapezoid(np.c_[np.ones(t.shape[0]), s], np.r_[0.0, grid], axis=1)
    r = _check_risk(risk, t.shape[0])
    inside = (grid >= t.min()) & (grid < t.max())
    if inside.sum() < 2:
        raise DataError("survival_metrics: fewer than two grid times inside the test follow-up; widen `times`.")
    ibs = integrated_brier_score(train_time, train_event, t, e, s[:, inside], grid[inside])
    dcal = d_calibration(surv_at(s, grid, t), e, n_bins=n_bins)
    return SurvivalMetrics(harrell_c=concordance_harrell(t, e, r),
                           uno_c=concordance_uno(train_time, train_event, t, e, r, tau=tau),
                           ibs=ibs, dcal_p_value=dcal.p_value, n=int(t.shape[0]))
