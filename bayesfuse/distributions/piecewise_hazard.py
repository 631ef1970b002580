"""Piecewise-constant hazard: censored likelihood and distribution (torch).

Conventions used throughout
---------------------------
The time axis is split by ``K - 1`` strictly increasing *inner* cut points
``0 < c_1 < ... < c_{K-1}`` into ``K`` pieces ``[c_k, c_{k+1})`` with ``c_0 = 0`` and
``c_K = inf``. Functions take the inner cuts only (a 1-D array of length ``K - 1``; empty
for a single exponential piece) and a tensor of log-hazards ``log_h`` whose last axis has
length ``K``. Each leading index (patient, posterior draw, ...) has its own hazard vector,
so shapes are free to differ between patients (no proportional-hazards assumption).

* cumulative hazard ``H(t) = sum_k h_k * |[c_k, c_{k+1}) ∩ [0, t]|``, ``S(t) = exp(-H(t))``
* density ``f(t) = h_{k(t)} S(t)`` where ``k(t)`` is the piece with ``c_k <= t < c_{k+1}``
  (a time exactly on a cut belongs to the piece that *starts* there)
* right-censored log-likelihood ``event * log h_{k(t)} - H(t)``

All functions are vectorised and broadcast over leading dimensions; none loops in Python
over patients or pieces. They work in float32 and float64 (the dtype of ``log_h``).
The numpy twins used on posterior draws live in :mod:`bayesfuse.posterior.survival`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

from bayesfuse.exceptions import DataError

__all__ = [
    "make_cuts",
    "exposure",
    "piece_index",
    "cumulative_hazard",
    "log_survival",
    "log_density",
    "censored_log_likelihood",
    "PiecewiseExponential",
]

ArrayLike = Any
_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


# ----------------------------------------------------------------------------- cut points
def make_cuts(time: ArrayLike, event: ArrayLike, n_intervals: int) -> np.ndarray:
    """Inner cut points at quantiles of the event times.

    Parameters
    ----------
    time : array_like, shape (N,)
        Follow-up times (finite, >= 0).
    event : array_like, shape (N,)
        Event indicator, 1 = event observed, 0 = right-censored (bool or 0/1).
    n_intervals : int
        Requested number of pieces ``K`` (>= 1).

    Returns
    -------
    numpy.ndarray, shape (K' - 1,), float64
        The *inner* cut points ``c_1 < ... < c_{K'-1}`` (strictly increasing, all > 0); the
        outer edges ``0`` and ``inf`` are implicit. They are the ``k / K`` quantiles
        (``k = 1 .. K-1``) of the positive event times; when fewer than 2 events are
        observed the quantiles of all positive times are used instead. Tied quantiles are
        merged, so ``K' <= n_intervals`` pieces may result (``K'`` is ``len(cuts) + 1``:
        size the log-hazard vector from the returned cuts, not from ``n_intervals``).
        An empty array (one exponential piece) is returned when ``n_intervals == 1`` or no
        positive time exists.
    """
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1)
    if isinstance(n_intervals, bool) or not isinstance(n_intervals, (int, np.integer)) or n_intervals < 1:
        raise ValueError(f"n_intervals={n_intervals!r}; pass a positive integer number of pieces.")
    if time.size == 0:
        raise DataError("make_cuts got no times; pass at least one follow-up time.")
    if time.shape != event.shape:
        raise DataError(
            f"time has {time.size} entries but event has {event.size}; pass one event "
            f"indicator per time."
        )
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        raise DataError("time must be finite and >= 0; drop or fix missing/negative times first.")
    event = _event_to_bool_np(event)
    src = time[event & (time > 0)]
    if src.size < 2:
        src = time[time > 0]
    if n_intervals == 1 or src.size == 0:
        return np.empty(0, dtype=np.float64)
    levels = np.arange(1, n_intervals) / n_intervals
    cuts = np.unique(np.quantile(src, levels))
    return cuts[cuts > 0].astype(np.float64)


def _event_to_bool_np(event: np.ndarray) -> np.ndarray:
    if event.dtype == bool:
        return event
    ev = event.astype(np.float64)
    if not np.all((ev == 0) | (ev == 1)):
        raise DataError("event must be 0/1 (or bool): 1 = event observed, 0 = censored.")
    return ev == 1


# ----------------------------------------------------------------------------- helpers
def _cuts_tensor(cuts: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    """Validate inner cuts and return them as a 1-D tensor on ``like``'s dtype/device."""
    # validate on the host (numpy) so that no check synchronises a GPU
    c_np = (cuts.detach().cpu().double().numpy() if torch.is_tensor(cuts)
            else np.asarray(cuts, dtype=np.float64))
    if c_np.ndim == 0:
        c_np = c_np.reshape(1)
    if c_np.ndim != 1:
        raise ValueError(
            f"cuts must be a 1-D array of inner cut points, got shape {c_np.shape}; "
            f"pass e.g. make_cuts(time, event, n_intervals)."
        )
    c = torch.as_tensor(c_np, dtype=like.dtype, device=like.device)
    if c.numel() and (not np.all(np.isfinite(c_np)) or np.any(c_np <= 0)
                      or np.any(np.diff(c_np.astype(_NP_DTYPE.get(like.dtype, np.float64))) <= 0)):
        raise ValueError(
            "cuts must be finite, > 0 and strictly increasing (also after rounding to the "
            "dtype of log_h; inner cuts only: do not include 0 or inf); build them with "
            "make_cuts(time, event, n_intervals)."
        )
    return c


def _edges(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower edges (K,) and widths (K,) of the pieces; the last width is ``inf``."""
    zero = c.new_zeros(1)
    lower = torch.cat([zero, c])
    upper = torch.cat([c, c.new_full((1,), float("inf"))])
    return lower, upper - lower


def _check_log_h(log_h: torch.Tensor, c: torch.Tensor) -> None:
    if not torch.is_tensor(log_h) or not log_h.is_floating_point():
        raise TypeError("log_h must be a floating-point torch.Tensor of shape (..., K).")
    if log_h.dim() < 1 or log_h.shape[-1] != c.numel() + 1:
        raise ValueError(
            f"log_h has last dimension {log_h.shape[-1] if log_h.dim() else None} but the "
            f"{c.numel()} inner cuts define K = {c.numel() + 1} pieces; give one log-hazard "
            f"per piece (last axis of length len(cuts) + 1)."
        )


def _time_tensor(time: ArrayLike, like: torch.Tensor, validate: bool) -> torch.Tensor:
    t = torch.as_tensor(time, dtype=like.dtype, device=like.device)
    if validate and (bool(torch.isnan(t).any()) or bool((t < 0).any())):
        raise DataError(
            "time must be >= 0 and not NaN; drop or fix negative/missing times (see the "
            "nonpositive_times option of bf.heads.Survival)."
        )
    return t


def _gather_piece(log_h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log_h[..., idx]`` with broadcasting between ``log_h[..., 0]`` and ``idx``."""
    shape = torch.broadcast_shapes(log_h.shape[:-1], idx.shape)
    lh = log_h.expand(shape + log_h.shape[-1:])
    return torch.gather(lh, -1, idx.expand(shape).unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------- public API
def exposure(time: ArrayLike, cuts: ArrayLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Time spent in each piece up to ``time``.

    Parameters
    ----------
    time : array_like or Tensor, shape (...,)
        Non-negative times.
    cuts : array_like, shape (K-1,)
        Inner cut points.
    dtype : torch.dtype, optional
        Result dtype when ``time`` is not already a floating tensor (default float64).

    Returns
    -------
    Tensor, shape (..., K)
        ``|[c_k, c_{k+1}) ∩ [0, t]|``; rows sum to ``t``.
    """
    like = _like(time, dtype)
    t = _time_tensor(time, like, validate=True)
    lower, width = _edges(_cuts_tensor(cuts, like))
    return _exposure(t, lower, width)


def _exposure(t: torch.Tensor, lower: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    return torch.minimum((t.unsqueeze(-1) - lower).clamp(min=0), width)


def piece_index(time: ArrayLike, cuts: ArrayLike) -> torch.Tensor:
    """Index ``k`` of the piece ``[c_k, c_{k+1})`` containing each time.

    Parameters
    ----------
    time : array_like or Tensor, shape (...,)
        Non-negative times.
    cuts : array_like, shape (K-1,)
        Inner cut points.

    Returns
    -------
    LongTensor, shape (...,)
        Values in ``0 .. K-1``; a time exactly on ``c_k`` gets index ``k``.
    """
    like = _like(time, None)
    t = _time_tensor(time, like, validate=True)
    return _piece_index(t, _cuts_tensor(cuts, like))


def _piece_index(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    if c.numel() == 0:
        return torch.zeros(t.shape, dtype=torch.long, device=t.device)
    return torch.searchsorted(c, t.contiguous(), right=True)


def _like(x: ArrayLike, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        return torch.empty(0, dtype=dtype)
    if torch.is_tensor(x) and x.is_floating_point():
        return x
    return torch.empty(0, dtype=torch.float64)


def cumulative_hazard(log_h: torch.Tensor, t: ArrayLike, cuts: ArrayLike, *,
                      validate: bool = True) -> torch.Tensor:
    """Cumulative hazard ``H(t)``.

    Parameters
    ----------
    log_h : Tensor, shape (..., K)
        Log-hazard of each piece.
    t : array_like or Tensor, shape broadcastable to ``log_h.shape[:-1]``
        Non-negative times. For a grid of times per patient, add an axis:
        ``cumulative_hazard(log_h[..., None, :], t_grid, cuts)`` gives ``(..., T)``.
    cuts : array_like, shape (K-1,)
        Inner cut points.
    validate : bool
        Check ``t`` for NaN / negative values (skip inside hot loops on GPU).

    Returns
    -------
    Tensor, shape ``broadcast(log_h.shape[:-1], t.shape)``
    """
    c = _cuts_tensor(cuts, log_h)
    _check_log_h(log_h, c)
    tt = _time_tensor(t, log_h, validate)
    lower, width = _edges(c)
    return _cumhaz(log_h, tt, lower, width)


def _cumhaz(log_h: torch.Tensor, t: torch.Tensor, lower: torch.Tensor,
            width: torch.Tensor) -> torch.Tensor:
    return (log_h.exp() * _exposure(t, lower, width)).sum(-1)


def log_survival(log_h: torch.Tensor, t: ArrayLike, cuts: ArrayLike, *,
                 validate: bool = True) -> torch.Tensor:
    """Log survival ``log S(t) = -H(t)``.

    Parameters
    ----------
    log_h : Tensor, shape (..., K)
    t : array_like or Tensor, shape broadcastable to ``log_h.shape[:-1]``
    cuts : array_like, shape (K-1,)
    validate : bool

    Returns
    -------
    Tensor, shape ``broadcast(log_h.shape[:-1], t.shape)``
    """
    return -cumulative_hazard(log_h, t, cuts, validate=validate)


def log_density(log_h: torch.Tensor, t: ArrayLike, cuts: ArrayLike, *,
                validate: bool = True) -> torch.Tensor:
    """Log density ``log f(t) = log h_{k(t)} - H(t)``.

    Parameters
    ----------
    log_h : Tensor, shape (..., K)
    t : array_like or Tensor, shape broadcastable to ``log_h.shape[:-1]``
    cuts : array_like, shape (K-1,)
    validate : bool

    Returns
    -------
    Tensor, shape ``broadcast(log_h.shape[:-1], t.shape)``
    """
    return censored_log_likelihood(log_h, t, True, cuts, validate=validate)


def censored_log_likelihood(log_h: torch.Tensor, time: ArrayLike, event: ArrayLike,
                            cuts: ArrayLike, *, validate: bool = True) -> torch.Tensor:
    """Right-censored log-likelihood ``event * log h_{k(t)} - H(t)``.

    Equal to ``event * log f(t) + (1 - event) * log S(t)``. Intended for a Pyro model as
    ``pyro.factor("survival", censored_log_likelihood(log_h, time, event, cuts).sum(-1))``
    (or per patient inside a plate).

    Parameters
    ----------
    log_h : Tensor, shape (..., N, K)
        Per-patient log-hazards (leading dims: e.g. particles / posterior draws).
    time : array_like or Tensor, shape (N,) (any shape broadcastable to ``log_h.shape[:-1]``)
        Follow-up times, >= 0.
    event : array_like or Tensor, shape (N,) (broadcastable likewise)
        1 / True = event observed at ``time``, 0 / False = right-censored at ``time``.
    cuts : array_like, shape (K-1,)
        Inner cut points (see :func:`make_cuts`).
    validate : bool
        Check ``time``/``event`` values (each check synchronises a GPU; the shapes and cuts
        are always checked).

    Returns
    -------
    Tensor, shape (..., N)
        Log-likelihood contribution of each patient.
    """
    c = _cuts_tensor(cuts, log_h)
    _check_log_h(log_h, c)
    t = _time_tensor(time, log_h, validate)
    ev = torch.as_tensor(event, device=log_h.device)
    if ev.dtype != torch.bool:
        if validate and not bool(((ev == 0) | (ev == 1)).all()):
            raise DataError("event must be 0/1 (or bool): 1 = event observed, 0 = censored.")
        ev = ev == 1
    lower, width = _edges(c)
    H = _cumhaz(log_h, t, lower, width)
    lh_at = _gather_piece(log_h, _piece_index(t, c))
    return torch.where(ev, lh_at, torch.zeros((), dtype=log_h.dtype, device=log_h.device)) - H


# ----------------------------------------------------------------------------- distribution
class PiecewiseExponential(TorchDistribution):
    """Distribution of a time with piecewise-constant hazard.

    Parameters
    ----------
    log_h : Tensor, shape (..., K)
        Log-hazard per piece; ``batch_shape = log_h.shape[:-1]``, ``event_shape = ()``.
    cuts : array_like, shape (K-1,)
        Inner cut points (fixed, not a parameter).
    validate_args : bool, optional

    Notes
    -----
    ``rsample`` uses the closed-form inverse CDF, so it is reparameterised in ``log_h``.
    Right-censored observations: use :meth:`censored_log_prob` with ``pyro.factor``.
    """

    arg_constraints = {"log_h": constraints.independent(constraints.real, 1)}
    support = constraints.positive
    has_rsample = True

    def __init__(self, log_h: torch.Tensor, cuts: ArrayLike, validate_args: bool | None = None):
        self.cuts = _cuts_tensor(cuts, log_h)
        _check_log_h(log_h, self.cuts)
        self.log_h = log_h
        self._lower, self._width = _edges(self.cuts)
        super().__init__(log_h.shape[:-1], torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PiecewiseExponential, _instance)
        batch_shape = torch.Size(batch_shape)
        new.cuts, new._lower, new._width = self.cuts, self._lower, self._width
        new.log_h = self.log_h.expand(batch_shape + self.log_h.shape[-1:])
        super(PiecewiseExponential, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def _edge_cumhaz(self) -> torch.Tensor:
        """``H(c_k)`` at the lower edge of each piece, shape (..., K)."""
        h = self.log_h.exp()
        seg = h[..., :-1] * self._width[:-1]
        return torch.cat([torch.zeros_like(h[..., :1]), seg.cumsum(-1)], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return censored_log_likelihood(self.log_h, value, True, self.cuts, validate=False)

    def log_survival(self, value: torch.Tensor) -> torch.Tensor:
        """``log S(value)``, shape ``broadcast(sample_shape + batch_shape)``."""
        return -_cumhaz(self.log_h, torch.as_tensor(value, dtype=self.log_h.dtype,
                                                    device=self.log_h.device),
                        self._lower, self._width)

    def censored_log_prob(self, value: torch.Tensor, event: ArrayLike) -> torch.Tensor:
        """``event * log f(value) + (1 - event) * log S(value)`` (right censoring)."""
        return censored_log_likelihood(self.log_h, value, event, self.cuts,
                                       validate=bool(self._validate_args))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(self.log_survival(value))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """Closed-form quantile: solve ``H(t) = -log(1 - u)`` inside the piece."""
        u = torch.as_tensor(value, dtype=self.log_h.dtype, device=self.log_h.device)
        target = -torch.log1p(-u)
        shape = torch.broadcast_shapes(u.shape, self.batch_shape)
        Hc = self._edge_cumhaz.expand(shape + self.log_h.shape[-1:])
        target = target.expand(shape)
        k = (Hc[..., 1:] <= target.unsqueeze(-1)).sum(-1)
        lh_k = _gather_piece(self.log_h, k)
        Hc_k = torch.gather(Hc, -1, k.unsqueeze(-1)).squeeze(-1)
        return self._lower[k] + (target - Hc_k) * torch.exp(-lh_k)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.log_h.dtype, device=self.log_h.device)
        # keep samples strictly positive (support is positive): u = 0 would give t = 0
        u = u.clamp(min=torch.finfo(u.dtype).tiny)
        return self.icdf(u)

    @property
    def mean(self) -> torch.Tensor:
        """``E[T] = sum_k S(c_k) (1 - exp(-h_k w_k)) / h_k`` (last piece: ``S(c_{K-1}) / h``)."""
        h = self.log_h.exp()
        Sc = torch.exp(-self._edge_cumhaz)
        frac = torch.where(torch.isinf(self._width), torch.ones_like(h),
                           -torch.expm1(-h * self._width))
        return (Sc * frac / h).sum(-1)
