"""Learn-then-Test (Angelopoulos et al., 2021) for selective classification.

Pure numpy / scipy. The risk controlled is the *error rate among accepted patients*
(1 - selective precision); the hypotheses are ``H_j: R(lambda_j) > max_risk`` on a
threshold grid that does not depend on the labels, tested by exact binomial tail
p-values with fixed-sequence testing from the most conservative threshold, or (``starts > 1``)
by Wiens' fallback procedure from several label-free start points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

__all__ = ["LTTResult", "MultiLTTResult", "binomial_p_values", "default_grid", "effective_starts", "ltt_fixed_sequence",
           "ltt_multi_risk", "min_certifiable", "procedure_text"]


def _check_levels(max_risk: float, delta: float) -> None:
    if not (isinstance(max_risk, (int, float)) and 0.0 < float(max_risk) < 1.0):
        raise ValueError(f"max_risk={max_risk!r} must lie in (0, 1), e.g. 0.05 for at most 5% errors.")
    if not (isinstance(delta, (int, float)) and 0.0 < float(delta) < 1.0):
        raise ValueError(f"delta={delta!r} must lie in (0, 1), e.g. 0.1 for a 90%-confidence guarantee.")


def min_certifiable(max_risk: float, delta: float) -> int:
    """Smallest number of accepted patients that can be certified (with zero errors).

    ``n_min = ceil(log(delta) / log(1 - max_risk))``: the smallest ``m`` with
    ``(1 - max_risk) ** m <= delta``, i.e. the binomial p-value of 0 errors among ``m``.
    """
    _check_levels(max_risk, delta)
    m = max(1, math.ceil(math.log(delta) / math.log1p(-max_risk)))
    while (1 - max_risk) ** m > delta:  # guard against rounding in the log ratio
        m += 1
    while m > 1 and (1 - max_risk) ** (m - 1) <= delta:
        m -= 1
    return m


def binomial_p_values(n_errors, n_accepted, max_risk: float) -> np.ndarray:
    """Exact binomial p-values of ``H: risk > max_risk``.

    Parameters
    ----------
    n_errors, n_accepted : array-like of int, shape (n_grid,)
        Errors among the accepted calibration patients, and their number, per threshold.
    max_risk : float
        Risk level of the null hypothesis.

    Returns
    -------
    numpy.ndarray, shape (n_grid,)
        ``BinomCDF(n_errors; n_accepted, max_risk)``; 1.0 where nothing is accepted.
        (Equal to MAPIE's binary Hoeffding-Bentkus p-value, whose Bentkus part is this
        exact tail and whose Hoeffding part is never smaller.)
    """
    k = np.asarray(n_errors, dtype=float)
    m = np.asarray(n_accepted, dtype=float)
    p = binom.cdf(k, np.maximum(m, 1), max_risk)
    return np.where(m > 0, p, 1.0)


def default_grid(n_classes: int) -> np.ndarray:
    """Label- and data-free threshold grid on the max-probability scale, descending.

    Linear in ``[1/n_classes, 1]`` (step 0.0025) plus geometric points ``1 - 10**-k``
    (k up to 8) for very confident posteriors, followed by ``0`` (accept everyone).

    Returns
    -------
    numpy.ndarray, shape (n_grid,)
        Thresholds, strictly decreasing.
    """
    lo = 1.0 / max(int(n_classes), 1)
    lin = np.linspace(lo, 1.0, int(round((1.0 - lo) / 0.0025)) + 1)
    geo = 1.0 - np.geomspace(1e-8, 0.05, 120)
    grid = np.unique(np.concatenate([lin, geo, [0.0]]))
    return grid[::-1].copy()


class _Certified:
    """``any_certified`` / ``chosen`` of an LTT record (needs ``certified``, ``grid``, ``threshold``)."""

    certified: np.ndarray
    grid: np.ndarray
    threshold: float

    @property
    def any_certified(self) -> bool:
        return bool(self.certified.any())

    @property
    def chosen(self) -> int | None:
        """Index in ``grid`` of the chosen threshold, or None."""
        if not self.any_certified:
            return None
        return int(np.flatnonzero(self.grid == self.threshold)[0])


@dataclass(frozen=True)
class LTTResult(_Certified):
    """Outcome of fixed-sequence Learn-then-Test on one calibration set.

    Attributes
    ----------
    grid : numpy.ndarray, shape (n_tested,)
        Tested thresholds, most conservative first (those accepting >= ``n_min``
        calibration patients; label-free).
    n_accepted, n_errors : numpy.ndarray of int, shape (n_tested,)
        Accepted calibration patients and errors among them at each threshold.
    p_values : numpy.ndarray, shape (n_tested,)
        Exact binomial p-values.
    certified : numpy.ndarray of bool, shape (n_tested,)
        Thresholds rejected by fixed-sequence testing (all before the first ``p > delta``).
    threshold : float
        Chosen certified threshold (most acceptances, the higher threshold on ties);
        ``inf`` when nothing is certified (abstain on everyone).
    n_min : int
        Smallest certifiable number of accepted patients (at level ``delta / starts``).
    max_risk, delta : float
        Levels.
    starts : int
        Start points used (:func:`effective_starts`; 1 = plain fixed-sequence testing).
    """

    grid: np.ndarray
    n_accepted: np.ndarray
    n_errors: np.ndarray
    p_values: np.ndarray
    certified: np.ndarray
    threshold: float
    n_min: int
    max_risk: float
    delta: float
    starts: int = 1


def ltt_fixed_sequence(scores, errors, max_risk: float, delta: float, grid=None,
                       eligible=None, starts: int = 1) -> LTTResult:
    """Certify an acceptance threshold ``score >= lambda`` with fixed-sequence LTT.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Confidence score of each calibration patient (accept when ``score >= lambda``).
    errors : array-like of bool, shape (n,)
        Whether the prediction for each calibration patient is wrong.
    max_risk : float in (0, 1)
        Tolerated error rate among accepted patients.
    delta : float in (0, 1)
        Tolerated probability that the calibration draw misleads us.
    grid : array-like, optional
        Candidate thresholds fixed before looking at the labels (any order; tested from the
        highest). Defaults to :func:`default_grid` for the score range ``[0, 1]``.
    eligible : array-like of bool, shape (n,), optional
        Patients passing an earlier label-free gate (e.g. an OOD filter); the others are
        never accepted.
    starts : int
        Largest number of label-free start points. Start point ``j`` is the most conservative
        threshold accepting at least ``2**j * n_min(delta / k)`` calibration patients, each carries
        ``delta / k``, and the thresholds are tested by the fallback procedure (Wiens 2003): a
        certified threshold passes its level on to the next, so a sequence still running at the next
        start point continues at the summed level. ``k`` is :func:`effective_starts` (fewer start
        points when the last one would need more than half of the calibration patients; chosen from
        the number of patients only). ``1`` (default) is plain fixed-sequence testing, which stops for good when
        the few most confident calibration patients contain an error; ``starts=4`` is robust to that
        (studies/abstention_validity/calibration.py, docs/calibration.md).

    Returns
    -------
    LTTResult
        With ``threshold = inf`` when nothing is certifiable.

    Notes
    -----
    Guarantee: with probability >= 1 - delta over the calibration draw, the chosen
    threshold has population error rate among accepted patients <= max_risk (for new
    patients exchangeable with the calibration patients). The test sequence starts at the
    highest grid threshold accepting at least ``n_min`` calibration patients (a label-free
    choice), since fewer could never be certified and fixed-sequence testing stops at
    the first failure.
    """
    _check_levels(max_risk, delta)
    if not (isinstance(starts, (int, np.integer)) and starts >= 1):
        raise ValueError(f"starts={starts!r} must be an integer >= 1 (1 = plain fixed-sequence testing).")
    s = np.asarray(scores, dtype=float).ravel()
    e = np.asarray(errors, dtype=bool).ravel()
    if s.shape != e.shape:
        raise ValueError(f"scores {s.shape} and errors {e.shape} must have the same length.")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; check the posterior draws for non-finite probabilities.")
    if eligible is not None:
        keep = np.asarray(eligible, dtype=bool).ravel()
        s, e = s[keep], e[keep]
    g = default_grid(2) if grid is None else np.unique(np.asarray(grid, dtype=float))[::-1]
    starts = effective_starts(len(s), max_risk, delta, starts)
    n_min = min_certifiable(max_risk, delta / starts)

    n_acc, n_err = _counts(s, e, g)
    start = np.flatnonzero(n_acc >= n_min)
    if len(start) == 0:
        empty = np.array([], dtype=float)
        return LTTResult(grid=empty, n_accepted=empty.astype(int), n_errors=empty.astype(int),
                         p_values=empty, certified=empty.astype(bool), threshold=float("inf"),
                         n_min=n_min, max_risk=float(max_risk), delta=float(delta), starts=starts)
    sl = slice(start[0], None)
    g, n_acc, n_err = g[sl], n_acc[sl], n_err[sl]
    p = binomial_p_values(n_err, n_acc, max_risk)
    certified = _fixed_sequences(p, n_acc[None, :], np.array([n_min]), delta / starts, starts)
    thr = _most_accepting(g, n_acc, certified)
    return LTTResult(grid=g, n_accepted=n_acc.astype(int), n_errors=n_err.astype(int), p_values=p,
                     certified=certified, threshold=thr, n_min=n_min,
                     max_risk=float(max_risk), delta=float(delta), starts=starts)


def effective_starts(n_eligible, max_risks, delta: float, starts: int) -> int:
    """Number of start points worth their share of ``delta``: the largest ``k <= starts`` whose last start point
    leaves at least as many calibration patients beyond it as before it.

    Start point ``j`` (``j = 0..k-1``) is the first threshold accepting ``2**j * n_min(max_risk, delta / k)``
    calibration patients; ``k`` is the largest value for which the last one needs at most half of the
    (eligible) patients. A start point that cannot be reached would waste its share ``delta / k``, and one
    that leaves little room after it costs the first sequence more level than it gives back (measured in
    docs/calibration.md, "Start points"). Counting patients only, never labels, keeps the choice label-free.
    Small calibration sets therefore get plain fixed-sequence testing at the full ``delta``.

    Parameters
    ----------
    n_eligible : int or sequence of int
        Calibration patients that count for each risk.
    max_risks : float or sequence of float
        The level of each risk (same length as ``n_eligible``).
    delta : float
    starts : int
        The largest number of start points wanted.
    """
    n = np.atleast_1d(np.asarray(n_eligible, dtype=float))
    r = np.atleast_1d(np.asarray(max_risks, dtype=float))
    for k in range(int(starts), 1, -1):
        need = np.array([min_certifiable(float(x), delta / k) for x in r]) * 2 ** (k - 1)
        if np.all(n >= 2 * need):
            return k
    return 1


def procedure_text(starts: int) -> str:
    """How the thresholds were tested, in words (``starts`` = the start points used)."""
    if starts == 1:
        return "fixed-sequence testing"
    return f"fallback procedure from {starts} start points at delta/{starts} each (Wiens 2003)"


def _counts(s: np.ndarray, e: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accepted patients (``score >= lambda``) and errors among them at each threshold of ``g``."""
    order = np.argsort(s)
    err_cum = np.concatenate([[0], np.cumsum(e[order][::-1])])  # errors among the top-k
    n_acc = len(s) - np.searchsorted(s[order], g, side="left")  # count of score >= lambda
    return n_acc, err_cum[n_acc]


def _fixed_sequences(p: np.ndarray, n_acc: np.ndarray, n_min: np.ndarray, level: float, starts: int) -> np.ndarray:
    """Thresholds certified by the fallback procedure over ``starts`` label-free start points (bool, shape of ``p``).

    ``n_acc`` (n_risks, n_grid) and ``n_min`` (n_risks,): start point ``j`` is the first threshold where
    every risk has at least ``2**j * n_min`` accepted patients (label-free) and carries the weight
    ``level`` (``= delta / starts``); every other threshold carries 0. Thresholds are tested in grid order
    (most conservative first) by Wiens' fallback procedure (Wiens 2003, *Pharm. Stat.* 2:211; Wiens &
    Dmitrienko 2005): threshold ``i`` is tested at its own weight plus, when threshold ``i - 1`` was
    certified, the level it was tested at. This controls the family-wise error at ``starts * level`` under
    any dependence (a shortcut of a closed Bonferroni test), reduces to fixed-sequence testing for
    ``starts=1`` and certifies a superset of ``starts`` separate fixed sequences at ``level`` each
    (a sequence that is still running at the next start point continues at twice the level).
    """
    weight = np.zeros(len(p))
    for j in range(starts):  # label-free start points: the n_acc counts use scores only
        first = np.flatnonzero(np.all(n_acc >= n_min[:, None] * 2**j, axis=0))
        if len(first) == 0:
            break
        weight[first[0]] += level
    certified = np.zeros(len(p), dtype=bool)
    carried = 0.0
    for i in range(len(p)):
        alpha_i = weight[i] + carried
        certified[i] = alpha_i > 0 and p[i] <= alpha_i
        carried = alpha_i if certified[i] else 0.0
    return certified


def _most_accepting(g: np.ndarray, n_acc: np.ndarray, certified: np.ndarray) -> float:
    """The certified threshold with the most acceptances (the higher one on ties); ``inf`` if none."""
    if not certified.any():
        return float("inf")
    best = n_acc[certified].max()
    return float(g[np.flatnonzero(certified & (n_acc == best))[0]])


@dataclass(frozen=True)
class MultiLTTResult(_Certified):
    """Outcome of Learn-then-Test with several risks controlled at once (see :func:`ltt_multi_risk`).

    Attributes
    ----------
    grid : numpy.ndarray, shape (n_tested,)
        Tested thresholds on the joint score, most conservative first.
    n_accepted, n_errors : dict[str, numpy.ndarray of int, shape (n_tested,)]
        Per risk: accepted calibration patients that count for it, and errors among them.
    p_values : dict[str, numpy.ndarray, shape (n_tested,)]
        Per risk: exact binomial p-values of ``H: risk > max_risks[name]``.
    p_joint : numpy.ndarray, shape (n_tested,)
        ``max`` over risks (the intersection-union p-value of "some risk is too high").
    n_joint : numpy.ndarray of int, shape (n_tested,)
        Calibration patients accepted at each threshold (whichever risks they count for).
    certified : numpy.ndarray of bool, shape (n_tested,)
    threshold : float
        Chosen certified threshold (most jointly accepted patients); ``inf`` when none.
    n_min : dict[str, int]
    max_risks : dict[str, float]
    delta : float
    starts : int
        Start points used (:func:`effective_starts`).
    """

    grid: np.ndarray
    n_accepted: dict
    n_errors: dict
    p_values: dict
    p_joint: np.ndarray
    n_joint: np.ndarray
    certified: np.ndarray
    threshold: float
    n_min: dict
    max_risks: dict
    delta: float
    starts: int = 1


def ltt_multi_risk(scores, errors: dict, eligible: dict, max_risks: dict, delta: float, grid=None,
                   starts: int = 1) -> MultiLTTResult:
    """Certify one threshold ``score >= lambda`` that keeps several risks below their levels at once.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Joint confidence score of each calibration patient (accept when ``score >= lambda``).
    errors : dict[str, array-like of bool, shape (n,)]
        Per risk (e.g. per head): whether the call is wrong.
    eligible : dict[str, array-like of bool, shape (n,)]
        Per risk: patients that count for it (a known target; for a survival head, the patients
        selected by :func:`bayesfuse.calibration.censoring.select_at_risk`). The others are still
        accepted or refused, they only leave that risk's counts.
    max_risks : dict[str, float]
        Level of each risk (error rate among accepted, eligible patients).
    delta : float
        Family-wise error: the probability that *any* risk exceeds its level at the chosen threshold.
    grid : array-like, optional
        Label-free candidate thresholds; default :func:`default_grid` ``(2)``.
    starts : int
        Largest number of start points of the fallback procedure, as in :func:`ltt_fixed_sequence`
        (``k`` from :func:`effective_starts` over every risk's eligible count).

    Returns
    -------
    MultiLTTResult

    Notes
    -----
    At each threshold the null "some risk is above its level" is tested with the largest of the
    per-risk exact binomial p-values (an intersection-union test: if one risk's null holds, its
    p-value is valid and the maximum is at least as large), then fixed-sequence testing runs from
    the most conservative threshold. Guarantee: with probability >= 1 - delta over the calibration
    draw, every risk of the chosen threshold is at most its level simultaneously (no Bonferroni
    split of delta is needed). With a single risk it certifies the same thresholds as
    :func:`ltt_fixed_sequence` with ``eligible`` (ties between thresholds accepting as many eligible
    patients are broken towards more accepted patients overall).
    """
    _check_levels(0.5, delta)
    if not errors or set(errors) != set(max_risks) or set(errors) != set(eligible):
        raise ValueError(f"errors, eligible and max_risks must name the same risks; got {sorted(errors)}, "
                         f"{sorted(eligible)}, {sorted(max_risks)}.")
    if not (isinstance(starts, (int, np.integer)) and starts >= 1):
        raise ValueError(f"starts={starts!r} must be an integer >= 1 (1 = plain fixed-sequence testing).")
    s = np.asarray(scores, dtype=float).ravel()
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; check the posterior draws for non-finite probabilities.")
    names = list(max_risks)
    g = default_grid(2) if grid is None else np.unique(np.asarray(grid, dtype=float))[::-1]
    acc, err, n_min = {}, {}, {}
    for h in names:
        _check_levels(max_risks[h], delta)
        e = np.asarray(errors[h], dtype=bool).ravel()
        keep = np.asarray(eligible[h], dtype=bool).ravel()
        if e.shape != s.shape or keep.shape != s.shape:
            raise ValueError(f"risk {h!r}: errors {e.shape} / eligible {keep.shape} must match scores {s.shape}.")
        acc[h], err[h] = _counts(s[keep], e[keep], g)
    starts = effective_starts([int(np.asarray(eligible[h], dtype=bool).sum()) for h in names],
                              [max_risks[h] for h in names], delta, starts)
    for h in names:
        n_min[h] = min_certifiable(max_risks[h], delta / starts)
    n_acc = np.stack([acc[h] for h in names])
    mins = np.array([n_min[h] for h in names])
    start = np.flatnonzero(np.all(n_acc >= mins[:, None], axis=0))
    sl = slice(start[0], None) if len(start) else slice(0, 0)
    g = g[sl]
    acc = {h: acc[h][sl].astype(int) for h in names}
    err = {h: err[h][sl].astype(int) for h in names}
    pv = {h: binomial_p_values(err[h], acc[h], max_risks[h]) for h in names}
    p_joint = np.max(np.stack([pv[h] for h in names]), axis=0) if len(g) else np.array([], dtype=float)
    certified = _fixed_sequences(p_joint, n_acc[:, sl], mins, delta / starts, starts)
    n_joint = (len(s) - np.searchsorted(np.sort(s), g, side="left")).astype(int)
    thr = _most_accepting(g, n_joint, certified)
    return MultiLTTResult(grid=g, n_accepted=acc, n_errors=err, p_values=pv, p_joint=p_joint, n_joint=n_joint,
                          certified=certified, threshold=thr, n_min=n_min,
                          max_risks={h: float(max_risks[h]) for h in names}, delta=float(delta), starts=starts)
