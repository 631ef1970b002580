"""The censoring model of the survival guarantees: ``G(t) = P(C >= t)``, and what it is used for.

Two uses, both under *conditionally independent censoring* (``T`` independent of ``C`` given the
patient; for :class:`KaplanMeierCensoring`, ``C`` independent of ``(T, x)``):

* :func:`select_at_risk`: the patients whose censoring time is at least a cut-off ``c0``
  (Candès, Lei & Ren 2023). Only their ``min(T, c0)`` is known. A patient with an event before
  ``c0`` has an unseen censoring time; whether it exceeds ``c0`` is drawn with probability
  ``G(c0) / G(T_obs)`` (the censoring time imputed from the censoring model given ``C >= T_obs``,
  as in Sesia & Svetnik 2024). Then ``P(selected | T, x) = G(c0 | x)`` for every ``T``, exactly
  when ``G`` is the true censoring survival: selection does not depend on the outcome.
* :func:`ipcw_weights`: inverse-probability-of-censoring weights of the patients whose status at a
  horizon is known, to estimate a population rate on a censored test set.

numpy only. Times follow the convention of the survival heads: an event is observed when
``T <= C`` (a tie counts as an event).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse.exceptions import DataError

__all__ = ["KaplanMeierCensoring", "describe_censoring", "ipcw_weights", "make_censoring", "select_at_risk",
           "status_at"]


def _check_outcomes(time, event, what: str = "outcomes") -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event, dtype=np.float64).ravel()
    if t.shape != e.shape:
        raise DataError(f"{what}: time {t.shape} and event {e.shape} must have the same length.")
    if len(t) == 0:
        raise DataError(f"{what}: no patient; pass at least one (time, event) pair.")
    if np.isnan(t).any() or np.isnan(e).any():
        raise DataError(f"{what}: time or event contains NaN; drop patients with an unknown outcome first.")
    if np.any(t <= 0) or not np.isfinite(t).all():
        raise DataError(f"{what}: times must be finite and > 0 (min {t.min():g}); drop or fix the others.")
    if np.any((e != 0) & (e != 1)):
        raise DataError(f"{what}: event must be 0/1 (1 = event, 0 = censored).")
    return t, e.astype(bool)


@dataclass(frozen=True)
class KaplanMeierCensoring:
    """Kaplan-Meier estimate of the censoring survival, the same for every patient.

    Assumes censoring independent of the survival time and of the patient's data (random
    censoring, e.g. administrative end of study with accrual unrelated to prognosis). Fit it on
    outcomes that are *not* the calibration patients' (the training patients') for the guarantees
    to hold conditionally on it.

    Attributes
    ----------
    times : numpy.ndarray, shape (n_times,)
        Distinct observed times, ascending.
    surv : numpy.ndarray, shape (n_times,)
        ``P(C > times[k])`` (right-continuous Kaplan-Meier step function, censorings as the events,
        every patient with ``T_obs >= t`` at risk at ``t``; equal to
        ``lifelines.KaplanMeierFitter().fit(time, 1 - event)``, checked in tests).
    n : int
        Patients it was fitted on.

    Notes
    -----
    Beyond the last observed time the estimate stays at its last value; :meth:`check_support`
    refuses cut-offs there (where ``G`` is not identified) with a clear error.
    """

    times: np.ndarray
    surv: np.ndarray
    n: int
    marginal = True

    @classmethod
    def fit(cls, time, event) -> KaplanMeierCensoring:
        """Estimate from observed times (n,) and event indicators (n,) (1 = event, 0 = censored)."""
        t, e = _check_outcomes(time, event, "KaplanMeierCensoring.fit")
        uniq, inv = np.unique(t, return_inverse=True)
        n_at = np.bincount(inv).astype(np.float64)                 # patients with T_obs == t
        cens = np.bincount(inv, weights=(~e).astype(np.float64))   # censorings at t
        at_risk = len(t) - np.concatenate([[0.0], np.cumsum(n_at)[:-1]])
        return cls(times=uniq, surv=np.cumprod(1.0 - cens / at_risk), n=int(len(t)))

    @classmethod
    def from_targets(cls, targets: pd.DataFrame, time: str = "time", event: str = "event") -> KaplanMeierCensoring:
        """Estimate from a targets table (e.g. the training patients'); rows with an unknown outcome are dropped."""
        if not isinstance(targets, pd.DataFrame) or time not in targets or event not in targets:
            raise DataError(f"Censoring outcomes must be a DataFrame with columns {time!r} and {event!r} "
                            "(e.g. train.targets).")
        ok = targets[[time, event]].apply(pd.to_numeric, errors="coerce").dropna()
        ok = ok[ok[time] > 0]
        return cls.fit(ok[time].to_numpy(), ok[event].to_numpy())

    def greater(self, t) -> np.ndarray:
        """``P(C > t)``, shape of ``t``."""
        t = np.asarray(t, dtype=np.float64)
        k = np.searchsorted(self.times, t, side="right") - 1
        return np.where(k >= 0, self.surv[np.clip(k, 0, None)], 1.0)

    def at_least(self, t, post=None) -> np.ndarray:
        """``G(t) = P(C >= t)`` (the left limit of :meth:`greater`), shape of ``t``.

        ``post`` is accepted for the interface of covariate-dependent censoring models
        (``model.at_least(times (n,), post) -> (n,)``) and ignored: this estimate is marginal.
        """
        t = np.asarray(t, dtype=np.float64)
        k = np.searchsorted(self.times, t, side="left") - 1
        return np.where(k >= 0, self.surv[np.clip(k, 0, None)], 1.0)

    def check_support(self, cutoff: float, what: str) -> None:
        """Raise when ``G(cutoff)`` is 0 or ``cutoff`` lies beyond the last time the estimate saw."""
        g = float(self.at_least(cutoff))
        if cutoff > self.times[-1] or g <= 0:
            raise DataError(f"{what}={cutoff:g} lies beyond the censoring model's follow-up (last time "
                            f"{self.times[-1]:g}, P(C >= {what}) = {g:.3g}): no patient can be known to be "
                            f"followed that long. Pass a shorter {what}.")


def make_censoring(censoring, time: np.ndarray, event: np.ndarray, time_col: str = "time",
                   event_col: str = "event"):
    """The censoring model a survival guarantee uses, and where it came from.

    Parameters
    ----------
    censoring : None, pandas.DataFrame or model
        ``None``: :class:`KaplanMeierCensoring` of the calibration outcomes ``(time, event)``
        themselves; a DataFrame (e.g. ``train.targets``): Kaplan-Meier of its ``time_col`` /
        ``event_col`` outcomes (recommended: outcomes independent of the calibration patients); an
        object with ``at_least(times (n,), post) -> (n,)`` (``P(C >= t | patient)``) and a
        ``marginal`` attribute (True when it ignores the patient): used as is.
    time, event : numpy.ndarray, shape (n,)
        Calibration outcomes (used only when ``censoring`` is None).

    Returns
    -------
    model, source : (censoring model, str)
        ``source`` is ``"calibration"``, ``"given outcomes"``, ``"given estimate"`` (a
        :class:`KaplanMeierCensoring`) or ``"given model"``.
    """
    if censoring is None:
        return KaplanMeierCensoring.fit(time, event), "calibration"
    if isinstance(censoring, pd.DataFrame):
        return KaplanMeierCensoring.from_targets(censoring, time_col, event_col), "given outcomes"
    if isinstance(censoring, KaplanMeierCensoring):
        return censoring, "given estimate"
    if callable(getattr(censoring, "at_least", None)):
        return censoring, "given model"
    raise DataError(f"censoring={type(censoring).__name__}: pass None (Kaplan-Meier of the calibration outcomes), "
                    "the training patients' targets DataFrame, or a model with at_least(times, post).")


def describe_censoring(source: str, model) -> str:
    """Where ``P(C >= t)`` came from, in words (for ``guarantee_`` texts)."""
    n = getattr(model, "n", None)
    return {"calibration": "the Kaplan-Meier estimate of the calibration patients' own outcomes (the guarantee is "
                           "then approximate: pass censoring=train.targets for an estimate independent of them)",
            "given outcomes": f"the Kaplan-Meier estimate of the {n} outcomes passed as censoring= (e.g. the "
                              "training patients')",
            "given estimate": f"the Kaplan-Meier estimate passed as censoring= (fitted on {n} patients' outcomes)",
            "given model": "the censoring model passed as censoring="}[source]


def _at_least(censoring, t: np.ndarray, post) -> np.ndarray:
    g = np.asarray(censoring.at_least(t, post), dtype=np.float64).reshape(t.shape)
    if np.isnan(g).any() or np.any((g < 0) | (g > 1)):
        raise DataError("The censoring model returned values outside [0, 1] (or NaN) for P(C >= t).")
    return g


def status_at(time, event, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Status of each patient at ``horizon``: ``(known, event_by_horizon)``, both bool (n,).

    Known: an event at or before ``horizon`` (then ``T <= horizon``), or follow-up reaching it
    (``T_obs >= horizon``: an event exactly at ``horizon`` counts as by it, a censoring there means
    ``T > horizon``). Unknown: censored before ``horizon``.
    """
    t, e = np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)
    by = e & (t <= horizon)
    return by | (t >= horizon), by


def ipcw_weights(time, event, horizon: float, censoring, post=None) -> np.ndarray:
    """Inverse-probability-of-censoring weights of the status at ``horizon``, shape (n,).

    ``1 / G(T_obs)`` for an event at or before ``horizon``, ``1 / G(horizon)`` for follow-up that
    reaches ``horizon`` without an event, ``0`` when censored before ``horizon`` (status unknown).
    With the true ``G`` and conditionally independent censoring, ``E[w f(T, x)] = E[f(T, x)]`` for
    any ``f`` of the status at ``horizon``.
    """
    t, e = np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)
    known, by = status_at(t, e, horizon)
    at = np.where(by, t, float(horizon))
    g = _at_least(censoring, at, post)
    with np.errstate(divide="ignore"):
        w = np.where(known & (g > 0), 1.0 / np.where(g > 0, g, 1.0), 0.0)
    return w


def select_at_risk(time, event, cutoff: float, censoring, rng: np.random.Generator, post=None) -> np.ndarray:
    """Patients whose censoring time is at least ``cutoff``, bool (n,) (early events: drawn).

    Selected: ``T_obs >= cutoff``, or an event before ``cutoff`` kept with probability
    ``G(cutoff) / G(T_obs)`` (``G`` from ``censoring``). For every selected patient
    ``min(T, cutoff) = min(T_obs, cutoff)`` is known, and ``P(selected | T, x) = G(cutoff | x)``
    when ``G`` is the true censoring survival (see the module docstring).
    """
    t, e = np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)
    early = e & (t < cutoff)
    g_cut = _at_least(censoring, np.full(t.shape, float(cutoff)), post)
    g_own = _at_least(censoring, np.where(early, t, float(cutoff)), post)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep_p = np.where(g_own > 0, g_cut / np.where(g_own > 0, g_own, 1.0), 0.0)
    u = rng.uniform(size=t.shape)
    return (t >= cutoff) | (early & (u < keep_p))
