"""Bayesian survival head: piecewise-constant hazard on the latent ``z``.

Model (pieces ``k = 1..K`` of the data-driven time grid, features ``g(z)`` of width ``P``)::

    log h_k(z) = b_k + g(z)^T w_k                      (one output per piece: NOT proportional hazards)
    b_1 ~ N(m_1, 1.5^2),   b_k - b_{k-1} ~ N(m_k - m_{k-1}, s^2)          (random walk on the baseline)
    w_1 ~ N(0, a^2 I),     w_k - w_{k-1} ~ N(0, (s a)^2 I)                 (random walk on the weights)
    y | z ~ right-censored piecewise exponential: event * log h_{k(t)}(z) - H(t | z)

``m`` is the crude log event rate per piece of the training data (empirical-Bayes centring
so that the prior is unit-free), ``s = smoothness``, ``a = min(1, 2 / sqrt(P))``.
``g(z) = z`` for ``hidden = 0``; otherwise ``g`` is a point-estimated
``Linear -> LayerNorm -> GELU`` layer (last-layer Bayesian network).

Optional direct covariate path (``Survival(covariates=[...])``, ``C`` covariates)::

    log h_k(z, x_c) = b_k + g(z)^T w_k + x_c^T v,      v ~ N(0, a_v^2 I),  a_v = min(1, 2 / sqrt(C))

a proportional term (one ``v`` for every piece; the ``z`` part keeps the non-PH
flexibility). ``x_c`` (standardised inputs, decoder-mean filled where absent) is supplied by
:meth:`bayesfuse.module.fusion_module.FusionModule.head_covariates` as ``target["covariates"]``
(likelihood) or ``covariates=`` (:meth:`predict`). Site ``<head>.v`` (C,), mean-field guide.

The Pyro sites are the *increments* (``<head>.b_incr`` (K,), ``<head>.w_incr`` (P, K)), whose
prior is independent Normal; ``b`` and ``w`` are their cumulative sums over pieces. The guide
is a learned mean-field Normal on the increments, i.e. a correlated Gaussian on ``(b, w)``
(a random-walk-structured covariance across pieces).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from bayesfuse.distributions.piecewise_hazard import _cumhaz, _edges, _gather_piece, _piece_index
from bayesfuse.heads import Survival
from bayesfuse.module.heads import HeadModule

__all__ = ["SurvivalHeadModule"]

_LOG_H_CLAMP = 40.0     # |log h| bound: exp stays finite in float32 even times 1e4 time units
_BASELINE_SCALE = 1.5   # prior sd of the first piece's baseline around the crude rate
_INIT_SCALE = 0.02      # initial guide sd of the increments
#: ``"proportional"``: one ``v`` (C,) for every piece; ``"piecewise"``: ``v_k`` (C, K) with the random walk of ``w``.
COVARIATE_EFFECTS = ("proportional", "piecewise")


class SurvivalHeadModule(HeadModule):
    """Piecewise-constant-hazard head with Bayesian per-piece weights.

    Parameters
    ----------
    latent_dim : int
        ``D``.
    cuts : array_like, shape (K-1,)
        Inner cut points of the time grid.
    baseline : array_like, shape (K,), optional
        Crude log event rate per piece (prior centre and guide initialisation); zeros if omitted.
    hidden : int
        Width ``P`` of the point-estimated feature layer ``g``; 0 = ``g(z) = z`` (``P = D``).
    smoothness : float
        Random-walk prior scale ``s`` across pieces.
    weight : float
        Multiplier of the log-likelihood in the ELBO.
    covariates : list of str, optional
        Names of the covariate modalities (for :class:`FusionModule`); ``None`` = no direct path.
    covariate_dims : list of int, optional
        Feature count of each covariate modality (``C`` = their sum).

    Shapes
    ------
    ``log_hazard(z, b, w[, v, x_c])``: z (..., N, D), b (..., K), w (..., P, K), v (..., C),
    x_c (..., N, C) -> (..., N, K).
    ``predict`` returns ``log_hazard`` (S, N, K).
    """

    def __init__(self, latent_dim: int, cuts, baseline=None, hidden: int = 0, smoothness: float = 0.5,
                 weight: float = 1.0, covariates: list[str] | None = None, covariate_dims: list[int] | None = None,
                 covariate_effect: str = "proportional"):
        super().__init__()
        cuts = np.asarray(cuts if cuts is not None else [], dtype=np.float64).reshape(-1)
        K = cuts.size + 1
        base = np.zeros(K) if baseline is None else np.asarray(baseline, dtype=np.float64).reshape(-1)
        if base.shape != (K,):
            raise ValueError(f"baseline has {base.size} values for {K} pieces; refit the survival head.")
        self.n_pieces = K
        self.hidden = int(hidden)
        self.smoothness = float(smoothness)
        self.weight = float(weight)
        P = self.hidden if self.hidden > 0 else int(latent_dim)
        self.n_features = P
        self.feature_net = (nn.Sequential(nn.Linear(latent_dim, self.hidden), nn.LayerNorm(self.hidden), nn.GELU())
                            if self.hidden > 0 else nn.Identity())
        self.w_prior_scale = min(1.0, 2.0 / math.sqrt(P))
        lower, width = _edges(torch.as_tensor(cuts, dtype=torch.float64))
        self.register_buffer("cuts", torch.as_tensor(cuts, dtype=torch.float64))
        self.register_buffer("lower", lower)
        self.register_buffer("width", width)        # last width = inf
        incr_prior_loc = torch.as_tensor(np.diff(base, prepend=0.0), dtype=torch.float64)
        b_prior_scale = torch.full((K,), self.smoothness, dtype=torch.float64)
        b_prior_scale[0] = _BASELINE_SCALE
        w_prior_scale = torch.full((P, K), self.smoothness * self.w_prior_scale, dtype=torch.float64)
        w_prior_scale[:, 0] = self.w_prior_scale
        self.register_buffer("b_prior_loc", incr_prior_loc)
        self.register_buffer("b_prior_scale", b_prior_scale)
        self.register_buffer("w_prior_scale_", w_prior_scale)
        # guide parameters (mean-field Normal on the increments)
        inv_sp = math.log(math.expm1(_INIT_SCALE))
        self.b_loc = nn.Parameter(incr_prior_loc.clone())
        self.b_raw_scale = nn.Parameter(torch.full((K,), inv_sp, dtype=torch.float64))
        self.w_loc = nn.Parameter(torch.zeros(P, K, dtype=torch.float64))
        self.w_raw_scale = nn.Parameter(torch.full((P, K), inv_sp, dtype=torch.float64))
        self.covariates = list(covariates) if covariates else []
        dims = [int(d) for d in (covariate_dims or [])]
        if len(dims) != len(self.covariates) or any(d < 1 for d in dims):
            raise ValueError(f"covariate_dims={covariate_dims} must give one positive feature count per covariate "
                             f"modality {self.covariates}; build the head through FusionModel.")
        if covariate_effect not in COVARIATE_EFFECTS:
            raise ValueError(f"covariate_effect={covariate_effect!r}; use one of {COVARIATE_EFFECTS}.")
        self.covariate_effect = covariate_effect
        C = self.n_covariates = sum(dims)
        if C:
            a_v = min(1.0, 2.0 / math.sqrt(C))
            shape = (C,) if covariate_effect == "proportional" else (C, K)
            v_scale = torch.full(shape, a_v, dtype=torch.float64)
            if covariate_effect == "piecewise":   # random walk over pieces, as w
                v_scale[:, 1:] *= self.smoothness
            self.register_buffer("v_prior_scale_", v_scale)
            self.v_loc = nn.Parameter(torch.zeros(shape, dtype=torch.float64))
            self.v_raw_scale = nn.Parameter(torch.full(shape, inv_sp, dtype=torch.float64))

    @classmethod
    def from_spec(cls, spec: Survival, latent_dim: int) -> SurvivalHeadModule:
        """Build from a fitted :class:`bayesfuse.heads.Survival` (``cuts`` set at model construction)."""
        if spec.cuts is None:
            raise ValueError("Survival head has no time grid (cuts); build the FusionModel on training data first.")
        w = spec.weight
        if isinstance(w, str):
            raise ValueError("Survival head weight is still 'auto'; FusionModel resolves it at construction.")
        covariates = getattr(spec, "covariates", None)
        if covariates and not getattr(spec, "covariate_dims", None):
            raise ValueError("Survival head has covariates but no covariate_dims; FusionModel sets them at "
                             "construction.")
        return cls(latent_dim, spec.cuts, baseline=spec.baseline, hidden=spec.hidden,
                   smoothness=spec.smoothness, weight=float(w), covariates=covariates,
                   covariate_dims=getattr(spec, "covariate_dims", None),
                   covariate_effect=getattr(spec, "covariate_effect", "proportional"))

    # ------------------------------------------------------------------ params
    def _guide_dists(self) -> tuple[dist.Normal, dist.Normal]:
        return (dist.Normal(self.b_loc, F.softplus(self.b_raw_scale) + 1e-5),
                dist.Normal(self.w_loc, F.softplus(self.w_raw_scale) + 1e-5))

    @staticmethod
    def _from_increments(b_incr: torch.Tensor, w_incr: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"b": b_incr.cumsum(-1), "w": w_incr.cumsum(-1)}

    def _v_guide(self) -> dist.Normal:
        return dist.Normal(self.v_loc, F.softplus(self.v_raw_scale) + 1e-5)

    def _v_site(self, name: str) -> tuple[str, int]:
        return (f"{name}.v", 1) if self.covariate_effect == "proportional" else (f"{name}.v_incr", 2)

    def _v_value(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.covariate_effect == "proportional" else v.cumsum(-1)

    def model_params(self, name: str) -> dict[str, torch.Tensor]:
        b = pyro.sample(f"{name}.b_incr", dist.Normal(self.b_prior_loc, self.b_prior_scale).to_event(1))
        w = pyro.sample(f"{name}.w_incr", dist.Normal(torch.zeros_like(self.w_prior_scale_),
                                                      self.w_prior_scale_).to_event(2))
        out = self._from_increments(b, w)
        if self.n_covariates:
            site, ev = self._v_site(name)
            out["v"] = self._v_value(pyro.sample(site, dist.Normal(torch.zeros_like(self.v_prior_scale_),
                                                                   self.v_prior_scale_).to_event(ev)))
        return out

    def guide_params(self, name: str) -> dict[str, torch.Tensor]:
        qb, qw = self._guide_dists()
        b = pyro.sample(f"{name}.b_incr", qb.to_event(1))
        w = pyro.sample(f"{name}.w_incr", qw.to_event(2))
        out = self._from_increments(b, w)
        if self.n_covariates:
            site, ev = self._v_site(name)
            out["v"] = self._v_value(pyro.sample(site, self._v_guide().to_event(ev)))
        return out

    def draw_params(self, num_samples: int) -> dict[str, torch.Tensor]:
        qb, qw = self._guide_dists()
        out = self._from_increments(qb.sample((num_samples,)), qw.sample((num_samples,)))
        if self.n_covariates:
            out["v"] = self._v_value(self._v_guide().sample((num_samples,)))
        return out

    def mean_params(self) -> dict[str, torch.Tensor]:
        """Guide means of ``b`` (K,), ``w`` (P, K) and, with covariates, ``v`` (C,)."""
        out = self._from_increments(self.b_loc, self.w_loc)
        if self.n_covariates:
            out["v"] = self._v_value(self.v_loc)
        return out

    # ------------------------------------------------------------------ hazard
    def log_hazard(self, z: torch.Tensor, params: dict[str, torch.Tensor],
                   covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Per-piece log-hazard.

        ``z`` (N, D) with ``b`` (K,), ``w`` (P, K) -> (N, K); or ``z`` (S, N, D) with
        ``b`` (S, K), ``w`` (S, P, K) -> (S, N, K). With a covariate path, ``covariates``
        ``x_c`` (N, C) or (S, N, C) and ``params["v"]`` (C,) or (S, C) add ``x_c^T v`` to every
        piece. Clamped to ``[-40, 40]``.
        """
        g = self.feature_net(z)
        b, w = params["b"], params["w"]
        lin = g @ w                                   # (N, K) or (S, N, K) (batched matmul)
        lh = lin + b.unsqueeze(-2)
        if self.n_covariates:
            if covariates is None:
                raise ValueError(f"This survival head has a direct path from covariates {self.covariates}; "
                                 "pass covariates= (FusionModule.head_covariates builds them).")
            if covariates.shape[-1] != self.n_covariates:
                raise ValueError(f"covariates have {covariates.shape[-1]} columns; the head expects "
                                 f"{self.n_covariates} ({self.covariates}).")
            v = params["v"]
            if self.covariate_effect == "proportional":
                lh = lh + (covariates * v.unsqueeze(-2)).sum(-1, keepdim=True)
            else:                                     # v (C, K) or (S, C, K): per-piece effects
                lh = lh + covariates @ v
        return lh.clamp(-_LOG_H_CLAMP, _LOG_H_CLAMP)

    def _ll(self, log_h: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        H = _cumhaz(log_h, time, self.lower, self.width)
        lh_at = _gather_piece(log_h, _piece_index(time, self.cuts))
        return event * lh_at - H

    def log_likelihood(self, z, target, params):
        """Right-censored log-likelihood per patient, (..., B); 0 where the label is unknown."""
        log_h = self.log_hazard(z, params, target.get("covariates"))
        ll = self._ll(log_h, target["time"], target["event"])
        return torch.where(target["known"] > 0, ll, torch.zeros_like(ll))

    def predict(self, z, params, covariates: torch.Tensor | None = None):
        return {"log_hazard": self.log_hazard(z, params, covariates)}
