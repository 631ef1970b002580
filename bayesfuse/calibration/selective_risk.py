"""Selective-risk records shared by the abstainers: the "I don't know" sentinel, the realised risk
among accepted patients and its exact binomial interval (checked against ``scipy.stats.binomtest``'s
Clopper-Pearson interval in tests/test_calibration_abstain.py)."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import beta as beta_dist

__all__ = ["ABSTAIN", "RiskCoverage", "clopper_pearson"]

#: Sentinel written in the ``label`` column of :meth:`Abstainer.predict` for refused patients.
ABSTAIN: str = "I don't know"
"""The label that ``Abstainer.predict`` gives a refused patient."""

def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a binomial proportion ``k / n``.

    Returns ``(0.0, 1.0)`` when ``n == 0``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must lie in (0, 1), e.g. 0.95.")
    if n == 0:
        return 0.0, 1.0
    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta_dist.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class RiskCoverage:
    """Realised selective risk on a labelled set (see :meth:`Abstainer.risk_coverage`).

    Attributes
    ----------
    n : int
        Patients scored.
    n_accepted : int
        Patients given a label (not abstained).
    n_errors : int
        Wrong labels among the accepted.
    coverage : float
        ``n_accepted / n`` (fraction not abstained).
    error : float
        ``n_errors / n_accepted`` (NaN when nothing was accepted).
    ci_low, ci_high : float
        Clopper-Pearson interval of the error among accepted at level ``confidence``.
    confidence : float
    max_risk : float
        Target of the fitted Abstainer.
    """

    n: int
    n_accepted: int
    n_errors: int
    coverage: float
    error: float
    ci_low: float
    ci_high: float
    confidence: float
    max_risk: float

    @property
    def within_target(self) -> bool:
        """Whether the realised error among accepted is <= ``max_risk`` (True when none accepted)."""
        return bool(self.n_accepted == 0 or self.error <= self.max_risk)
