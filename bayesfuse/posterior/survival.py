"""Survival summaries from posterior draws of piecewise-constant log-hazards (numpy only).

Same conventions as :mod:`bayesfuse.distributions.piecewise_hazard` (the torch twin):
``cuts`` are the ``K - 1`` *inner* cut points ``0 < c_1 < ... < c_{K-1}``; piece ``k`` is
``[c_k, c_{k+1})`` with ``c_0 = 0`` and ``c_K = inf``; ``log_h`` has shape ``(S, N, K)``
(posterior draws x patients x pieces; any leading shape ``(..., K)`` is accepted and kept).

* ``H(t) = sum_k h_k |[c_k, c_{k+1}) ∩ [0, t]|``, ``S(t) = exp(-H(t))``.

This module must not import torch: the posterior layer is torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayesfuse.exceptions import ArgumentError

__all__ = [
    "cumulative_hazard",
    "survival_function",
    "risk",
    "quantile_time",
    "median_survival",
    "restricted_mean_survival",
]

ArrayLike = Any


# ----------------------------------------------------------------------------- validation
def _check_cuts(cuts: ArrayLike) -> np.ndarray:
    c = np.asarray(cuts, dtype=np.float64)
    if c.ndim == 0:
        c = c.reshape(1)
    if c.ndim != 1:
        raise ArgumentError(
            f"cuts must be a 1-D array of inner cut points, got shape {c.shape}; pass the "
            f"cuts stored on the survival head (without 0 and inf)."
        )
    if c.size and (not np.all(np.isfinite(c)) or np.any(c <= 0) or np.any(np.diff(c) <= 0)):
        raise ArgumentError(
            "cuts must be finite, > 0 and strictly increasing (inner cuts only: do not "
            "include 0 or inf)."
        )
    return c


def _check_log_h(log_h: ArrayLike, c: np.ndarray) -> np.ndarray:
    lh = np.asarray(log_h)
    if not np.issubdtype(lh.dtype, np.floating):
        lh = lh.astype(np.float64)
    if lh.ndim < 1 or lh.shape[-1] != c.size + 1:
        raise ArgumentError(
            f"log_h has shape {lh.shape} but the {c.size} inner cuts define K = {c.size + 1} "
            f"pieces; its last axis must have length len(cuts) + 1 (typical shape (S, N, K))."
        )
    if np.isnan(lh).any():
        raise ArgumentError("log_h contains NaN; check the posterior draws (did training diverge?).")
    return lh


def _check_times(times: ArrayLike, name: str = "times") -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if np.isnan(t).any():
        raise ArgumentError(f"{name} contains NaN; pass non-negative times.")
    if np.any(t < 0):
        raise ArgumentError(
            f"{name} contains negative values (min {t.min():g}); survival times start at 0, "
            f"pass non-negative times."
        )
    return t


def _edges(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lower = np.concatenate([[0.0], c])
    width = np.concatenate([c, [np.inf]]) - lower
    return lower, width


def _exposure(t: np.ndarray, lower: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(T,) times -> (T, K) time spent in each piece (finite times only)."""
    return np.minimum(np.clip(t[:, None] - lower, 0.0, None), width)


def _cumhaz(lh: np.ndarray, c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """H at 1-D times ``t`` (T,) -> (..., T); ``t = inf`` gives ``inf``."""
    lower, width = _edges(c)
    finite = np.isfinite(t)
    expo = _exposure(np.where(finite, t, 0.0), lower, width).astype(lh.dtype, copy=False)
    with np.errstate(over="ignore"):
        h = np.exp(lh)
    H = np.einsum("...k,tk->...t", h, expo)
    if not finite.all():
        H[..., ~finite] = np.inf
    return H


def _edge_cumhaz(h: np.ndarray, width: np.ndarray) -> np.ndarray:
    """H(c_k) at the lower edge of every piece, shape (..., K)."""
    seg = h[..., :-1] * width[:-1]
    return np.concatenate([np.zeros_like(h[..., :1]), np.cumsum(seg, axis=-1)], axis=-1)


# ----------------------------------------------------------------------------- public API
def cumulative_hazard(log_h: ArrayLike, cuts: ArrayLike, times: ArrayLike) -> np.ndarray:
    """Cumulative hazard ``H(t)`` on a grid of times.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
        Posterior draws of the per-piece log-hazards (any leading shape).
    cuts : array_like, shape (K-1,)
        Inner cut points.
    times : array_like, shape (T,) or scalar
        Non-negative times in any order (``inf`` allowed).

    Returns
    -------
    numpy.ndarray, shape (S, N, T) (or (S, N) for a scalar time)
        In the order of ``times``.
    """
    c = _check_cuts(cuts)
    lh = _check_log_h(log_h, c)
    t = _check_times(times)
    out = _cumhaz(lh, c, t.reshape(-1))
    return out[..., 0] if t.ndim == 0 else out.reshape(lh.shape[:-1] + t.shape)


def survival_at_own_times(log_h: ArrayLike, cuts: ArrayLike, times: ArrayLike) -> np.ndarray:
    """``S_i(t_i)``: each patient's survival at their own time, per draw.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
        Posterior draws of the per-piece log-hazards.
    cuts : array_like, shape (K-1,)
        Inner cut points.
    times : array_like, shape (N,)
        One finite non-negative time per patient.

    Returns
    -------
    numpy.ndarray, shape (S, N)
        Vectorised (no loop over patients); equals ``survival_function(log_h[:, i], cuts, t_i)``.
    """
    c = _check_cuts(cuts)
    lh = _check_log_h(log_h, c)
    t = _check_times(times).reshape(-1)
    if lh.ndim < 2 or lh.shape[-2] != t.shape[0]:
        raise ArgumentError(f"times has {t.shape[0]} values for log_h of shape {lh.shape}; pass one time per patient.")
    if not np.isfinite(t).all():
        raise ArgumentError("times must be finite for survival_at_own_times.")
    lower, width = _edges(c)
    expo = _exposure(t, lower, width).astype(lh.dtype, copy=False)      # (N, K)
    with np.errstate(over="ignore"):
        H = np.sum(np.exp(lh) * expo, axis=-1)                          # (S, N)
    return np.exp(-H)


def survival_function(log_h: ArrayLike, cuts: ArrayLike, times: ArrayLike) -> np.ndarray:
    """Survival probability ``S(t) = exp(-H(t))`` per draw and patient.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
        Posterior draws of the per-piece log-hazards (any leading shape).
    cuts : array_like, shape (K-1,)
        Inner cut points.
    times : array_like, shape (T,) or scalar
        Non-negative times in any order; results come back in the same order.

    Returns
    -------
    numpy.ndarray, shape (S, N, T) (or (S, N) for a scalar time)

    Raises
    ------
    ValueError
        If a time is negative or NaN, or shapes of ``log_h`` and ``cuts`` disagree.
    """
    return np.exp(-cumulative_hazard(log_h, cuts, times))


def risk(log_h: ArrayLike, cuts: ArrayLike, horizon: ArrayLike) -> np.ndarray:
    """Probability of an event by ``horizon``: ``P(T <= horizon) = 1 - S(horizon)``.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
    cuts : array_like, shape (K-1,)
    horizon : float or array_like, shape (T,)
        Non-negative horizon(s).

    Returns
    -------
    numpy.ndarray, shape (S, N) for a scalar horizon, (S, N, T) otherwise
        Computed as ``-expm1(-H)`` (accurate for small risks).
    """
    return -np.expm1(-cumulative_hazard(log_h, cuts, horizon))


def quantile_time(log_h: ArrayLike, cuts: ArrayLike, q: ArrayLike, *,
                  horizon: float | None = None) -> np.ndarray:
    """Time by which a fraction ``q`` of patients has had the event: ``S(t_q) = 1 - q``.

    Solved exactly inside the piece where ``H`` crosses ``-log(1 - q)``:
    ``t_q = c_k + (-log(1 - q) - H(c_k)) / h_k``.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
    cuts : array_like, shape (K-1,)
    q : float or array_like, shape (Q,)
        Probabilities in ``[0, 1]`` (``q = 1`` gives ``inf``).
    horizon : float, optional
        When given, quantile times beyond ``horizon`` are reported as ``inf`` ("not reached
        within the horizon", e.g. the end of follow-up, where the last piece's hazard is
        extrapolated). By default the exact model quantile is returned.

    Returns
    -------
    numpy.ndarray, shape (S, N) for a scalar ``q``, (S, N, Q) otherwise
        ``inf`` where the survival curve never falls to ``1 - q`` (the hazard of the
        last reached piece underflows to 0) or the time exceeds ``horizon``.
    """
    c = _check_cuts(cuts)
    lh = _check_log_h(log_h, c)
    qq = np.asarray(q, dtype=np.float64)
    if np.isnan(qq).any() or np.any((qq < 0) | (qq > 1)):
        raise ArgumentError(f"q must lie in [0, 1], got {q!r}; pass e.g. q=0.5 for the median.")
    if horizon is not None and not (np.ndim(horizon) == 0 and float(horizon) >= 0):
        raise ArgumentError(f"horizon={horizon!r}; pass a non-negative scalar or None.")
    lower, width = _edges(c)
    with np.errstate(over="ignore"):
        h = np.exp(lh)
    Hc = _edge_cumhaz(h, width)                                   # (..., K)
    with np.errstate(divide="ignore"):
        target = -np.log1p(-qq.reshape(-1))                       # (Q,); q = 1 -> inf
    # piece where H crosses the target: number of inner edges with H(c_k) <= target
    k = (Hc[..., None, 1:] <= target[:, None]).sum(-1)            # (..., Q)
    Hc_k = np.take_along_axis(Hc, k, axis=-1)
    h_k = np.take_along_axis(h, k, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = lower[k] + (target - Hc_k) / h_k
    t = np.where(np.isinf(target), np.inf, t)                     # q = 1
    t = np.where(target == 0, 0.0, t)                             # q = 0
    t = np.where(np.isnan(t), np.inf, t)                          # 0 / 0 when h_k == 0
    if horizon is not None:
        t = np.where(t > float(horizon), np.inf, t)
    return t[..., 0] if qq.ndim == 0 else t.reshape(lh.shape[:-1] + qq.shape)


def median_survival(log_h: ArrayLike, cuts: ArrayLike, *,
                    horizon: float | None = None) -> np.ndarray:
    """Median survival time (``S(t) = 0.5``), solved exactly within its piece.

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
    cuts : array_like, shape (K-1,)
    horizon : float, optional
        Report medians beyond ``horizon`` as ``inf`` (see :func:`quantile_time`).

    Returns
    -------
    numpy.ndarray, shape (S, N)
        ``inf`` where ``S`` never drops to 0.5 (hazard 0 in the last reached piece).
    """
    return quantile_time(log_h, cuts, 0.5, horizon=horizon)


def restricted_mean_survival(log_h: ArrayLike, cuts: ArrayLike, tau: float) -> np.ndarray:
    """Restricted mean survival time ``RMST(tau) = int_0^tau S(t) dt`` in closed form.

    Per piece with exposure ``e_k`` up to ``tau``:
    ``S(c_k) * (1 - exp(-h_k e_k)) / h_k`` (``= S(c_k) e_k`` when ``h_k e_k -> 0``).

    Parameters
    ----------
    log_h : array_like, shape (S, N, K)
    cuts : array_like, shape (K-1,)
    tau : float
        Finite, non-negative restriction time. ``tau = inf`` gives the mean ``E[T]``.

    Returns
    -------
    numpy.ndarray, shape (S, N)
    """
    c = _check_cuts(cuts)
    lh = _check_log_h(log_h, c)
    if np.ndim(tau) != 0:
        raise ArgumentError(f"tau must be a scalar, got shape {np.shape(tau)}; call once per tau.")
    tau_a = _check_times(tau, "tau")
    lower, width = _edges(c)
    with np.errstate(over="ignore"):
        h = np.exp(lh)
    Hc = _edge_cumhaz(h, width)
    if np.isinf(tau_a):
        e = width.astype(lh.dtype)
    else:
        e = _exposure(tau_a.reshape(1), lower, width)[0].astype(lh.dtype)   # (K,)
    x = h * e                                                             # (..., K)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # (1 - exp(-x)) / h, stable for small x, = 1/h for x = inf, = e for h = 0
        phi = np.where(x > 0, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0)
        per = np.where(np.isinf(e), 1.0 / h, e * phi)
        terms = np.exp(-Hc) * np.where(e > 0, per, 0.0)
    return terms.sum(-1)
