"""Conformalised lower predictive bound on the survival time under right censoring.

>>> lpb = bf.SurvivalBound(alpha=0.1).fit(cal_post, cal_targets, head="survival", censoring=train.targets)
>>> lpb.predict(test_post)             # lower_bound L_i with P(T_i >= L_i) >= 0.9
>>> lpb.coverage(test_post, test_targets)

Method: Candès, Lei & Ren (2023, JRSS-B, "Conformalized survival analysis"), fixed cut-off
``c0``, with the censoring times of patients who had an event imputed from the censoring model
(Sesia & Svetnik 2024), and the posterior-predictive distribution of ``T`` as the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import align_survival, check_survival_posterior
from bayesfuse.calibration.censoring import (
    KaplanMeierCensoring,
    _at_least,
    describe_censoring,
    make_censoring,
    select_at_risk,
)
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.posterior import Posterior
from bayesfuse.posterior import survival as _surv

__all__ = ["BoundCoverage", "SurvivalBound", "conformal_lower_level"]


def conformal_lower_level(scores, weights, test_weights, alpha: float) -> np.ndarray:
    """Weighted split-conformal lower ``alpha`` quantile of calibration scores (test mass at -inf).

    Parameters
    ----------
    scores : array-like, shape (n,)
        Calibration conformity scores ``V_i``.
    weights : array-like, shape (n,)
        Non-negative weight of each calibration score (all equal: plain split conformal).
    test_weights : float or array-like, shape (m,)
        Weight of each test patient.
    alpha : float in (0, 1)

    Returns
    -------
    numpy.ndarray, shape (m,) (or 0-d for a scalar test weight)
        ``beta = max{V_(k) : (w_test + sum of weights of scores < V_(k)) / (W + w_test) <= alpha}``,
        ``-inf`` when no score qualifies. For weighted-exchangeable scores (Tibshirani et al. 2019)
        ``P(V_test < beta) <= alpha``; with equal weights ``beta`` is the
        ``floor(alpha (n + 1))``-th smallest score.
    """
    v = np.asarray(scores, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    wt = np.asarray(test_weights, dtype=np.float64)
    if v.shape != w.shape or np.isnan(v).any() or np.any(w < 0) or np.any(wt < 0):
        raise ValueError("scores and weights must have the same length; weights must be >= 0, scores not NaN.")
    if len(v) == 0:
        return np.full(wt.shape, -np.inf)
    uniq, inv = np.unique(v, return_inverse=True)
    w_at = np.bincount(inv, weights=w, minlength=len(uniq))
    below = np.concatenate([[0.0], np.cumsum(w_at)[:-1]])        # weight strictly below each distinct score
    budget = alpha * (w.sum() + wt) - wt                          # below-weight allowed
    k = np.searchsorted(below, budget + 1e-12 * max(w.sum(), 1.0), side="right") - 1
    return np.where(k >= 0, uniq[np.clip(k, 0, None)], -np.inf)


@dataclass(frozen=True)
class BoundCoverage:
    """Realised coverage of lower bounds on a censored test set (see :meth:`SurvivalBound.coverage`).

    A patient is *covered* when ``T >= L``: known for ``T_obs >= L`` (event or censoring after the
    bound) and for an event before ``L`` (missed); unknown when censored before ``L``.

    Attributes
    ----------
    n : int
        Test patients with a usable outcome.
    n_known : int
        Those whose coverage is known (not censored before their bound).
    coverage_known : float
        Covered share among ``n_known`` (censored-before-bound patients left out).
    coverage_worst_case : float
        Covered share among all ``n``, counting the unknown as missed (a lower bound on coverage).
    coverage_ipcw : float
        ``1 - mean(1{event, T_obs < L} / G(T_obs))`` with the fitted censoring model: unbiased for the
        population coverage when that model is right.
    mean_bound, median_bound : float
        Of the lower bounds (time units of the data).
    share_at_cutoff : float
        Share of bounds equal to the cut-off ``c0`` ("at least c0").
    alpha : float
    cutoff : float
    """

    n: int
    n_known: int
    coverage_known: float
    coverage_worst_case: float
    coverage_ipcw: float
    mean_bound: float
    median_bound: float
    share_at_cutoff: float
    alpha: float
    cutoff: float

    @property
    def binomial_sd(self) -> float:
        """``sqrt(alpha (1 - alpha) / n_known)``: sd of ``coverage_known`` at exact coverage ``1 - alpha``."""
        return math.sqrt(self.alpha * (1 - self.alpha) / max(self.n_known, 1))


def _predictive_cdf_grid(log_h: np.ndarray, cuts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``1 - mean_s S_s(t)`` on a time grid, shape (n_patients, len(times)), in patient chunks of ~4e6 values."""
    out = np.empty((log_h.shape[1], len(times)))
    chunk = max(1, int(4e6 // max(log_h.shape[0] * len(times), 1)))
    for a in range(0, log_h.shape[1], chunk):
        out[a:a + chunk] = 1.0 - _surv.survival_function(log_h[:, a:a + chunk], cuts, times).mean(axis=0)
    return out


def choose_cutoff(post: Posterior, head: str, censoring, alpha: float, n_calibration: int,
                  max_patients: int = 200) -> float:
    """Label-free choice of the cut-off ``c0`` when ``SurvivalBound(horizon=None)``.

    Candidates: the head's inner cuts (quantiles of the *training* event times) and their
    midpoints, where ``G(c0) > 0``. For each, the expected number of selected calibration patients
    is ``m = n_calibration * mean G(c0 | x)`` and the expected conformal level
    ``floor(alpha (m + 1)) / (m + 1) - sqrt(alpha (1 - alpha) / m)`` (one sd lower, penalising small
    ``m``); the chosen ``c0`` maximises the mean of ``min(q(x), c0)`` over (at most ``max_patients``,
    evenly spaced) calibration patients, with ``q`` the predictive quantile at that level. Uses the
    calibration posteriors and the censoring model only, never the calibration outcomes (exactly
    label-free when the censoring model was fitted on other patients).
    """
    lh = np.asarray(post.draws[head]["log_hazard"])
    cuts = post.survival_cuts(head)
    cand = np.unique(np.concatenate([cuts, (cuts[1:] + cuts[:-1]) / 2]))
    if isinstance(censoring, KaplanMeierCensoring):
        cand = cand[cand <= censoring.times[-1]]
    idx = np.unique(np.linspace(0, post.n_patients - 1, min(max_patients, post.n_patients)).astype(int))
    sub = lh[:, idx]
    sub_post = _sub_post(post, idx)
    if len(cand) == 0:
        raise DataError("No cut-off candidate lies inside the censoring model's follow-up; pass horizon= explicitly.")
    grid = np.unique(np.concatenate([np.linspace(0, cand.max(), 257)[1:], cand]))
    cdf = _predictive_cdf_grid(sub, cuts, grid)                                    # (n_sub, T)
    best, best_c = -1.0, float(cand[0])
    for c in cand:
        g = _at_least(censoring, np.full(len(idx), float(c)), sub_post)
        m = n_calibration * float(g.mean())
        if m < 1 / alpha:
            continue
        beta = math.floor(alpha * (m + 1)) / (m + 1) - math.sqrt(alpha * (1 - alpha) / m)
        if beta <= 0:
            continue
        inside = grid <= c
        # first grid time where the predictive CDF reaches beta (c where it never does)
        reach = cdf[:, inside] >= beta
        q = np.where(reach.any(axis=1), grid[inside][np.argmax(reach, axis=1)], c)
        mean_bound = float(np.minimum(q, c).mean())
        if mean_bound > best:
            best, best_c = mean_bound, float(c)
    if best < 0:
        raise DataError(f"No cut-off leaves enough calibration patients followed long enough for alpha={alpha:g} "
                        f"(needs about {math.ceil(1 / alpha)}); add calibration patients or increase alpha.")
    return best_c


def _sub_post(post: Posterior, idx: np.ndarray) -> Posterior:
    from bayesfuse.calibration._common import subset_posterior

    return subset_posterior(post, np.asarray(post.sample_ids, dtype=object)[idx])


class SurvivalBound:
    """Lower predictive bound ``L(x)`` on the survival time with ``P(T >= L(X)) >= 1 - alpha``.

    Conformity score: the posterior-predictive CDF of ``T`` at the observed time,
    ``V_i = 1 - mean_s S_s(T_i | x_i)`` over the survival head's draws, and ``V_i = 1`` when
    ``T_i >= c0`` (covered by any bound, which never exceeds ``c0``; so ``T >= L`` exactly when
    ``V >= beta``), on the calibration patients whose censoring time is at least the cut-off ``c0`` (Candès, Lei & Ren
    2023; the censoring time of a patient with an event before ``c0`` is unseen, and whether it
    exceeds ``c0`` is drawn from the censoring model: kept with probability ``G(c0) / G(T_obs)``,
    Sesia & Svetnik 2024). The bound is the posterior-predictive quantile of ``T`` at the conformal
    level ``beta`` (the weighted lower ``alpha`` quantile of the ``V_i``, weights ``1 / G(c0 | x)``),
    capped at ``c0``: ``L(x) = min(q_beta(x), c0)``.

    Parameters
    ----------
    alpha : float in (0, 1)
        Miscoverage: ``P(T >= L) >= 1 - alpha``.
    horizon : float, optional
        The cut-off ``c0`` (time units of the data); bounds never exceed it. ``None``: chosen
        without the calibration outcomes by :func:`choose_cutoff`.
    seed : int
        Seed of the draw that decides, for patients with an event before ``c0``, whether their
        censoring time exceeds ``c0``.

    Attributes
    ----------
    horizon_ : float
        The cut-off ``c0`` used.
    beta_ : float
        Conformal level of the predictive quantile (marginal censoring model; ``NaN`` for a
        covariate-dependent one, where it varies per patient: see ``predict``'s ``quantile_level``).
    n_calibration_, n_selected_ : int
        Calibration patients, and those selected (censoring time >= ``c0``).
    censoring_ : censoring model
        ``P(C >= t)`` used for the selection and the weights.
    censoring_source_ : str
        ``"calibration"`` (Kaplan-Meier of the calibration outcomes), ``"given outcomes"``, ``"given estimate"``
        or ``"given model"``.
    guarantee_ : str
        What is guaranteed, in words.
    head_ : str

    Notes
    -----
    Guarantee. Assume (i) calibration and new patients are independent draws from one population
    (same cohort and preprocessing); (ii) conditionally independent censoring, ``T`` independent of
    ``C`` given the patient (for the default :class:`KaplanMeierCensoring`: ``C`` independent of
    ``(T, x)``); (iii) the censoring model is the true ``G(t | x) = P(C >= t | x)``. Then for a new
    patient ``P(T >= L(X)) >= 1 - alpha``, marginally over the calibration patients, the new patient
    and the selection draw. It is a statement about ``min(T, c0)`` (the window ``[0, c0]``): a bound
    equal to ``c0`` says "at least ``c0``", nothing beyond. It is not conditional on ``x`` (some
    patient groups may be covered less often) and says nothing about other populations. With ``G``
    estimated, the coverage can fall short of ``1 - alpha`` by an amount that vanishes as the estimate
    becomes exact (Candès et al. 2023, Thm 3); estimating it on outcomes independent of the
    calibration patients (``censoring=train.targets``) keeps (i)-(ii) intact. Bounds are
    conservative by construction (``T >= min(T, c0)`` and the cap at ``c0``).
    """

    def __init__(self, alpha: float = 0.1, horizon: float | None = None, *, seed: int = 0) -> None:
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha={alpha!r} must lie in (0, 1), e.g. 0.1 for a 90% lower bound.")
        if horizon is not None and not (np.ndim(horizon) == 0 and np.isfinite(horizon) and float(horizon) > 0):
            raise ValueError(f"horizon={horizon!r} must be a finite time > 0 (the cut-off c0), or None.")
        self.alpha = float(alpha)
        self.horizon = None if horizon is None else float(horizon)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"SurvivalBound(alpha={self.alpha}, horizon={self.horizon}, seed={self.seed})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "horizon_"):
            raise NotFittedError("This SurvivalBound is not fitted yet: call .fit(cal_post, cal_targets, head=...).")

    # --------------------------------------------------------------------- fit
    def fit(self, post: Posterior, targets: pd.DataFrame, head: str, censoring=None) -> SurvivalBound:
        """Calibrate on patients not used for training.

        Parameters
        ----------
        post : Posterior
            Calibration patients' posterior (with the survival ``head``).
        targets : pandas.DataFrame
            Observed time and event per patient id (the head's ``time`` / ``event`` columns).
        head : str
            Survival head.
        censoring : None, pandas.DataFrame or censoring model
            Where ``G(t) = P(C >= t)`` comes from (see :func:`~bayesfuse.calibration.censoring.make_censoring`):
            ``None`` = Kaplan-Meier of the calibration outcomes; pass the training patients' targets
            (``censoring=train.targets``) to estimate it independently of the calibration patients.

        Returns
        -------
        SurvivalBound
            ``self``, fitted.
        """
        time, event, _ = align_survival(post, targets, head)
        spec = post.heads[head]
        self.censoring_, self.censoring_source_ = make_censoring(censoring, time, event, spec.time, spec.event)
        n = len(time)
        c0 = self.horizon if self.horizon is not None else choose_cutoff(post, head, self.censoring_, self.alpha, n)
        if isinstance(self.censoring_, KaplanMeierCensoring):
            self.censoring_.check_support(c0, "horizon")
        rng = np.random.default_rng([self.seed, 15])
        sel = select_at_risk(time, event, c0, self.censoring_, rng, post)
        lh = np.asarray(post.draws[head]["log_hazard"])
        cuts = post.survival_cuts(head)
        v = 1.0 - _surv.predictive_survival_at(lh[:, sel], cuts, np.minimum(time[sel], c0))
        # past the cut-off the patient is covered by every bound (L <= c0 <= T): the top score, so the
        # conformal level is not lowered for long survivors whose quantile lies beyond c0
        v = np.where(time[sel] >= c0, 1.0, v)
        w = 1.0 / np.clip(_at_least(self.censoring_, np.full(n, c0), post)[sel], 1e-300, None)
        self.head_ = head
        self.horizon_ = float(c0)
        self.cuts_ = cuts
        self.n_calibration_ = int(n)
        self.n_selected_ = int(sel.sum())
        self.scores_ = v
        self.weights_ = w
        self.marginal_ = bool(getattr(self.censoring_, "marginal", False))
        self.beta_ = float(conformal_lower_level(v, np.ones_like(v), 1.0, self.alpha)) if self.marginal_ \
            else float("nan")
        self.guarantee_ = self._guarantee_text()
        return self

    def _guarantee_text(self) -> str:
        conf = f"{100 * (1 - self.alpha):.4g}%"
        src = describe_censoring(self.censoring_source_, self.censoring_)
        assume = ("censoring independent of the survival time and of the patient's data"
                  if self.marginal_ else "censoring independent of the survival time given the patient")
        level = (f"the posterior-predictive quantile of T at level {self.beta_:.4g}" if self.marginal_
                 else "the posterior-predictive quantile of T at a per-patient weighted-conformal level")
        text = (f"For a new patient from the calibration patients' population, P(T >= L) >= {conf}, where L is "
                f"{level}, capped at the cut-off c0 = {self.horizon_:.6g}. This is a statement on the window "
                f"[0, c0]: a bound equal to c0 means 'at least c0'. It is marginal (on average over patients, "
                f"not for each patient or subgroup) and assumes {assume}, with P(C >= t) from {src}. "
                f"{self.n_selected_}/{self.n_calibration_} calibration patients were followed to c0 (censoring "
                "time >= c0; drawn from the censoring model for those with an earlier event) and calibrate it "
                "(Candès, Lei & Ren 2023, fixed cut-off).")
        if self.marginal_ and not np.isfinite(self.beta_):
            text += (f" Too few selected patients for alpha={self.alpha:g} (needs at least "
                     f"{math.ceil(1 / self.alpha) - 1}): every bound is 0.")
        return text

    # ----------------------------------------------------------------- predict
    def levels(self, post: Posterior) -> np.ndarray:
        """Conformal level ``beta`` of each patient, shape (n_patients,)."""
        self._check_fitted()
        check_survival_posterior(post, self.head_)
        if self.marginal_:
            return np.full(post.n_patients, self.beta_)
        w_test = 1.0 / np.clip(_at_least(self.censoring_, np.full(post.n_patients, self.horizon_), post), 1e-300, None)
        return conformal_lower_level(self.scores_, self.weights_, w_test, self.alpha)

    def predict(self, post: Posterior) -> pd.DataFrame:
        """Lower bounds for new patients.

        Parameters
        ----------
        post : Posterior
            New patients' posterior from the same fitted model.

        Returns
        -------
        pandas.DataFrame, shape (n_patients, 4), indexed by patient id
            ``lower_bound`` (``L``, time units of the data), ``quantile_level`` (``beta``: ``L`` is the
            predictive quantile at this level, before the cap), ``cutoff`` (``c0``), ``at_cutoff``
            (``L == c0``: "at least c0").
        """
        beta = self.levels(post)
        if not np.array_equal(post.survival_cuts(self.head_), self.cuts_):
            raise DataError("The posterior's survival time grid differs from the calibration one; use posteriors "
                            "of the same fitted model.")
        lh = np.asarray(post.draws[self.head_]["log_hazard"])
        q = _surv.predictive_quantile_time(lh, self.cuts_, np.where(np.isfinite(beta), beta, 0.0), self.horizon_)
        bound = np.minimum(q, self.horizon_)
        return pd.DataFrame({"lower_bound": bound, "quantile_level": beta, "cutoff": self.horizon_,
                             "at_cutoff": bound >= self.horizon_},
                            index=pd.Index(np.asarray(post.sample_ids, dtype=object), name="sample_id"))

    def coverage(self, post: Posterior, targets: pd.DataFrame) -> BoundCoverage:
        """Realised coverage of the bounds on a censored test set (three ways of counting censoring).

        Parameters
        ----------
        post : Posterior
        targets : pandas.DataFrame
            Observed time and event per patient id; patients with an unusable outcome are left out.

        Returns
        -------
        BoundCoverage
        """
        bounds = self.predict(post)["lower_bound"].to_numpy()
        time, event, ok = align_survival(post, targets, self.head_, allow_missing=True)
        sub = post if ok.all() else _sub_post(post, np.flatnonzero(ok))
        return bound_coverage(bounds[ok], time[ok], event[ok], self.alpha, self.horizon_, self.censoring_, sub)


def bound_coverage(bounds, time, event, alpha: float, cutoff: float, censoring, post=None) -> BoundCoverage:
    """:class:`BoundCoverage` of lower ``bounds`` (n,) against observed ``time`` / ``event`` (n,).

    ``censoring`` gives ``G(t) = P(C >= t)`` for the IPCW estimate (``post``: the same patients, for
    a covariate-dependent model); ``coverage_ipcw`` is NaN when ``G`` is 0 at a missed patient's time.
    """
    b = np.asarray(bounds, dtype=float)
    t, e = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    covered = t >= b                     # T >= T_obs >= L
    missed = e & (t < b)                 # event before the bound
    known = covered | missed
    n = len(b)
    g = _at_least(censoring, t, post)
    with np.errstate(divide="ignore", invalid="ignore"):
        miss_w = np.where(missed, 1.0 / np.where(g > 0, g, np.nan), 0.0)
    return BoundCoverage(n=n, n_known=int(known.sum()),
                         coverage_known=float(covered.sum() / known.sum()) if known.any() else float("nan"),
                         coverage_worst_case=float(covered.mean()) if n else float("nan"),
                         coverage_ipcw=float(1.0 - np.mean(miss_w)) if n else float("nan"),
                         mean_bound=float(b.mean()) if n else float("nan"),
                         median_bound=float(np.median(b)) if n else float("nan"),
                         share_at_cutoff=float((b >= cutoff).mean()) if n else float("nan"),
                         alpha=float(alpha), cutoff=float(cutoff))
