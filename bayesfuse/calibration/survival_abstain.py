"""High / low risk calls at a horizon from a survival head, their errors under censoring, and test risk.

A call at horizon ``tau``: ``"high"`` when the posterior-predictive risk ``P(T <= tau | x)`` is at
least ``risk_threshold`` (0.5 by default), else ``"low"``. It is wrong when the truth is on the other
side (``T > tau`` for ``"high"``, ``T <= tau`` for ``"low"``). Used by
:class:`bayesfuse.calibration.Abstainer` (``head=<survival head>`` or several heads); numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesfuse.calibration.censoring import ipcw_weights, select_at_risk, status_at
from bayesfuse.calibration.selective_risk import clopper_pearson
from bayesfuse.posterior import Posterior

__all__ = ["HIGH", "LOW", "SURVIVAL_SCORES", "SurvivalRiskCoverage", "survival_calls", "survival_errors",
           "survival_risk_coverage"]

HIGH: str = "high"
LOW: str = "low"
SURVIVAL_SCORES = ("predictive", "band")


def survival_calls(post: Posterior, head: str, horizon: float, risk_threshold: float = 0.5,
                   score: str = "predictive") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk, call and confidence score of each patient at ``horizon``.

    Parameters
    ----------
    post : Posterior
    head : str
        Survival head.
    horizon : float
        Time of the call (units of the data).
    risk_threshold : float in (0, 1)
        ``"high"`` when the predictive risk is >= this.
    score : {"predictive", "band"}
        ``"predictive"``: posterior-predictive probability of the call (risk for ``"high"``,
        ``1 - risk`` for ``"low"``). ``"band"``: share of posterior draws of ``S(horizon | x)`` on
        the called side of the threshold (1 when the whole credible band is on that side).

    Returns
    -------
    risk : numpy.ndarray, shape (n_patients,)
        Posterior-predictive ``P(T <= horizon | x)`` (mean over draws).
    high : numpy.ndarray of bool, shape (n_patients,)
        The call is ``"high"``.
    scores : numpy.ndarray, shape (n_patients,)
        Confidence in the call, in [0, 1].
    """
    draws = np.asarray(post.risk(head, float(horizon)), dtype=np.float64)       # (S, N)
    risk = draws.mean(axis=0)
    high = risk >= risk_threshold
    if score == "predictive":
        scores = np.where(high, risk, 1.0 - risk)
    else:
        scores = ((draws >= risk_threshold) == high[None, :]).mean(axis=0)
    return risk, high, scores


def survival_errors(high: np.ndarray, time: np.ndarray, event: np.ndarray, known: np.ndarray, horizon: float,
                    censoring, rng: np.random.Generator, post: Posterior | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wrong calls of the calibration patients followed to ``horizon``: ``(errors, eligible)``, bool (n,).

    Eligible: a known outcome and a censoring time >= ``horizon``
    (:func:`~bayesfuse.calibration.censoring.select_at_risk`; drawn for events before it), so
    their truth at ``horizon`` is observed; when ``censoring`` is the true censoring survival and
    censoring is independent of ``(T, x)``, they are a random subsample of the calibration
    patients, and binomial Learn-then-Test on them is exact.
    """
    sel = known & select_at_risk(time, event, horizon, censoring, rng, post)
    _, by = status_at(time, event, horizon)
    return sel & (high != by), sel


@dataclass(frozen=True)
class SurvivalRiskCoverage:
    """Realised wrong-call rate at the horizon among accepted patients of a censored test set.

    Attributes
    ----------
    n : int
        Patients with a usable outcome.
    n_accepted : int
        Those given a call.
    coverage : float
        ``n_accepted / n``.
    n_known_accepted : int
        Accepted patients whose status at the horizon is known (not censored before it).
    n_errors_known : int
        Wrong calls among them.
    error_known : float
        ``n_errors_known / n_known_accepted`` (complete cases; NaN when none).
    ci_low, ci_high : float
        Clopper-Pearson interval of ``error_known``.
    error_ipcw : float
        IPCW estimate of the population wrong-call rate among accepted patients,
        ``sum(w acc err) / sum(w acc)`` with :func:`~bayesfuse.calibration.censoring.ipcw_weights`
        (unbiased ratio terms when the censoring model is right).
    confidence, max_risk, horizon : float
    """

    n: int
    n_accepted: int
    coverage: float
    n_known_accepted: int
    n_errors_known: int
    error_known: float
    ci_low: float
    ci_high: float
    error_ipcw: float
    confidence: float
    max_risk: float
    horizon: float

    @property
    def within_target(self) -> bool:
        """Whether the IPCW wrong-call rate among accepted is <= ``max_risk`` (True when none accepted)."""
        return bool(self.n_accepted == 0 or not self.error_ipcw > self.max_risk)


def survival_risk_coverage(accepted: np.ndarray, high: np.ndarray, time: np.ndarray, event: np.ndarray,
                           horizon: float, censoring, max_risk: float, confidence: float = 0.95,
                           post: Posterior | None = None) -> SurvivalRiskCoverage:
    """:class:`SurvivalRiskCoverage` of calls ``high`` (n,) accepted where ``accepted`` (n,), against outcomes (n,)."""
    acc = np.asarray(accepted, dtype=bool)
    known, by = status_at(time, event, horizon)
    wrong = high != by
    k_acc = acc & known
    n_err = int((wrong & k_acc).sum())
    lo, hi = clopper_pearson(n_err, int(k_acc.sum()), confidence)
    w = ipcw_weights(time, event, horizon, censoring, post)
    den = float((w * acc).sum())
    n = len(acc)
    return SurvivalRiskCoverage(
        n=n, n_accepted=int(acc.sum()), coverage=float(acc.mean()) if n else float("nan"),
        n_known_accepted=int(k_acc.sum()), n_errors_known=n_err,
        error_known=n_err / int(k_acc.sum()) if k_acc.any() else float("nan"), ci_low=lo, ci_high=hi,
        error_ipcw=float((w * acc * wrong).sum() / den) if den > 0 else float("nan"),
        confidence=float(confidence), max_risk=float(max_risk), horizon=float(horizon))
