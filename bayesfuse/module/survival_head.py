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
        # optional full-rank posterior of all increments (post-fit refit, module/survival_refit.py);
        # empty = not set (the mean-field guide above is used)
        self.register_buffer("post_loc", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("post_tril", torch.zeros(0, 0, dtype=torch.float64))

    @classmethod
    def from_spec(cls, spec: Survival, latent_dim: int) -> SurvivalHeadModule:
        """Build from a fitted :class:`bayesfuse.heads.Survival` (``cuts`` set at model construction)."""
        if spec.cuts is None:
            raise ValueError("Survival head has no time grid (cuts); build the FusionModel on training data first.")
        w = spec.weight
        if isinstance(w, str):
            raise ValueError("Survival head weight is still 'auto'; FusionModel resolves it at construction.")
        if isinstance(spec.smoothness, str):
            raise ValueError("Survival head smoothness is still 'auto'; FusionModel resolves it at construction.")
        covariates = getattr(spec, "covariates", None)
        if covariates and not getattr(spec, "covariate_dims", None):
            raise ValueError("Survival head has covariates but no covariate_dims; FusionModel sets them at "
                             "construction.")
        return cls(latent_dim, spec.cuts, baseline=spec.baseline, hidden=spec.hidden,
                   smoothness=spec.smoothness, weight=float(w), covariates=covariates,
                   covariate_dims=getattr(spec, "covariate_dims", None),
                   covariate_effect=getattr(spec, "covariate_effect", "proportional"))

    # ------------------------------------------------------- flat parameter view
    def _blocks(self) -> list[tuple[str, tuple[int, ...], int, int]]:
        """(site suffix, shape, start, end) of each increment block in the flat vector ``theta`` (T,)."""
        K, P = self.n_pieces, self.n_features
        out = [("b_incr", (K,), 0, K), ("w_incr", (P, K), K, K + P * K)]
        if self.n_covariates:
            shape = tuple(self.v_prior_scale_.shape)
            site = "v" if self.covariate_effect == "proportional" else "v_incr"
            out.append((site, shape, K + P * K, K + P * K + self.v_prior_scale_.numel()))
        return out

    @property
    def n_flat(self) -> int:
        """``T``: number of increments (b, w and v) in the flat parameter vector."""
        return self._blocks()[-1][3]

    def flat_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior loc, scale (T,) of the flat increments (independent Normals)."""
        locs = [self.b_prior_loc, torch.zeros_like(self.w_prior_scale_).reshape(-1)]
        scales = [self.b_prior_scale, self.w_prior_scale_.reshape(-1)]
        if self.n_covariates:
            locs.append(torch.zeros_like(self.v_prior_scale_).reshape(-1))
            scales.append(self.v_prior_scale_.reshape(-1))
        return torch.cat(locs), torch.cat(scales)

    def flat_guide(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean-field guide loc, sd (T,) of the flat increments (differentiable in the guide parameters)."""
        qb, qw = self._guide_dists()
        locs, sds = [qb.loc, qw.loc.reshape(-1)], [qb.scale, qw.scale.reshape(-1)]
        if self.n_covariates:
            qv = self._v_guide()
            locs.append(qv.loc.reshape(-1))
            sds.append(qv.scale.reshape(-1))
        return torch.cat(locs), torch.cat(sds)

    def guide_parameters(self) -> list[nn.Parameter]:
        """The mean-field guide's parameters (loc and raw scale of every increment block)."""
        out = [self.b_loc, self.b_raw_scale, self.w_loc, self.w_raw_scale]
        if self.n_covariates:
            out += [self.v_loc, self.v_raw_scale]
        return out

    def params_from_flat(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat increments ``theta`` (..., T) -> ``b`` (..., K), ``w`` (..., P, K)[, ``v``]."""
        parts = {site: theta[..., s:e].reshape(*theta.shape[:-1], *shape) for site, shape, s, e in self._blocks()}
        out = self._from_increments(parts["b_incr"], parts["w_incr"])
        if self.n_covariates:
            out["v"] = self._v_value(parts.get("v", parts.get("v_incr")))
        return out

    @property
    def has_fullrank_posterior(self) -> bool:
        return self.post_loc.numel() > 0

    def set_fullrank_posterior(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        """Use ``N(loc, L L^T)`` (loc (T,), L (T, T) lower triangular, positive diagonal) as the guide."""
        T = self.n_flat
        if loc.shape != (T,) or scale_tril.shape != (T, T):
            raise ValueError(f"loc {tuple(loc.shape)} / scale_tril {tuple(scale_tril.shape)} must be ({T},) / "
                             f"({T}, {T}) for this head's {T} increments.")
        if not bool((torch.diagonal(scale_tril) > 0).all()):
            raise ValueError("scale_tril needs a positive diagonal.")
        ref = self.b_loc
        self.post_loc = loc.detach().to(device=ref.device, dtype=ref.dtype).clone()
        self.post_tril = torch.tril(scale_tril.detach()).to(device=ref.device, dtype=ref.dtype).clone()

    def clear_fullrank_posterior(self) -> None:
        """Back to the mean-field guide."""
        ref = self.b_loc
        self.post_loc = torch.zeros(0, dtype=ref.dtype, device=ref.device)
        self.post_tril = torch.zeros(0, 0, dtype=ref.dtype, device=ref.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the full-rank posterior's buffers are sized when set; saves without them (older files or no
        # refit) load as "not set"
        for key in ("post_loc", "post_tril"):
            k = prefix + key
            if k in state_dict:
                setattr(self, key, torch.empty_like(state_dict[k]).to(device=self.b_loc.device))
            else:
                state_dict[k] = getattr(self, key)[:0] if key == "post_loc" else getattr(self, key)[:0, :0]
                setattr(self, key, state_dict[k])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _fullrank_guide_sites(self, name: str) -> dict[str, torch.Tensor]:
        """Pyro sites of the full-rank guide, block by block (exact chain-rule factorisation)."""
        m, L = self.post_loc, self.post_tril
        eps_prev = m[:0]
        vals = {}
        for site, shape, s, e in self._blocks():
            mean = m[s:e] + (L[s:e, :s] @ eps_prev if s else 0.0)
            Lb = L[s:e, s:e]
            d = dist.MultivariateNormal(mean, scale_tril=Lb)
            if len(shape) > 1:
                d = dist.TransformedDistribution(d, [torch.distributions.transforms.ReshapeTransform((e - s,), shape)])
            val = pyro.sample(f"{name}.{site}", d)
            eps_b = torch.linalg.solve_triangular(Lb, (val.reshape(-1) - mean).unsqueeze(-1), upper=False)
            eps_prev = torch.cat([eps_prev, eps_b.squeeze(-1)])
            vals[site] = val
        out = self._from_increments(vals["b_incr"], vals["w_incr"])
        if self.n_covariates:
            out["v"] = self._v_value(vals.get("v", vals.get("v_incr")))
        return out

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
        if self.has_fullrank_posterior:
            return self._fullrank_guide_sites(name)
        qb, qw = self._guide_dists()
        b = pyro.sample(f"{name}.b_incr", qb.to_event(1))
        w = pyro.sample(f"{name}.w_incr", qw.to_event(2))
        out = self._from_increments(b, w)
        if self.n_covariates:
            site, ev = self._v_site(name)
            out["v"] = self._v_value(pyro.sample(site, self._v_guide().to_event(ev)))
        return out

    def draw_params(self, num_samples: int) -> dict[str, torch.Tensor]:
        if self.has_fullrank_posterior:
            eps = torch.randn((int(num_samples), self.post_loc.numel()), dtype=self.post_loc.dtype,
                              device=self.post_loc.device)
            return self.params_from_flat(self.post_loc + eps @ self.post_tril.T)
        qb, qw = self._guide_dists()
        out = self._from_increments(qb.sample((num_samples,)), qw.sample((num_samples,)))
        if self.n_covariates:
            out["v"] = self._v_value(self._v_guide().sample((num_samples,)))
        return out

    def mean_params(self) -> dict[str, torch.Tensor]:
        """Guide means of ``b`` (K,), ``w`` (P, K) and, with covariates, ``v`` (C,)."""
        if self.has_fullrank_posterior:
            return self.params_from_flat(self.post_loc)
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

    def linear_design(self, z: torch.Tensor, covariates: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The log-hazard as a linear function of the flat increments ``theta`` (T,).

        Before the clamp, ``log h_k(z) = psi(z) @ u[index[k]]`` with ``u = A @ theta`` the
        concatenation ``(b (K), w (P, K) row-major, v (C) or (C, K) row-major)``.

        Parameters
        ----------
        z : torch.Tensor
            (..., N, D) latent draws.
        covariates : torch.Tensor, optional
            (..., N, C) for a head with a direct covariate path.

        Returns
        -------
        psi : torch.Tensor
            (..., N, d) features ``(1, g(z)[, x_c])``, ``d = 1 + P (+ C)``.
        index : torch.Tensor
            (K, d) long: positions in ``u`` of piece ``k``'s coefficients of ``psi``.
        A : torch.Tensor
            (U, T): ``u = A @ theta`` (the cumulative sums of the random walk).
        """
        K, P, T = self.n_pieces, self.n_features, self.n_flat
        g = self.feature_net(z)
        parts = [torch.ones_like(g[..., :1]), g]
        k = torch.arange(K, device=self.cuts.device)
        cols = [k.unsqueeze(1), K + torch.arange(P, device=k.device).unsqueeze(0) * K + k.unsqueeze(1)]
        if self.n_covariates:
            if covariates is None:
                raise ValueError(f"This survival head has a direct path from covariates {self.covariates}; "
                                 "pass covariates= (FusionModule.head_covariates builds them).")
            parts.append(covariates.to(g.dtype).expand(*g.shape[:-1], covariates.shape[-1]))
            c = torch.arange(self.n_covariates, device=k.device).unsqueeze(0)
            off = K + P * K
            cols.append((off + c).expand(K, -1) if self.covariate_effect == "proportional"
                        else off + c * K + k.unsqueeze(1))
        eye = torch.eye(T, dtype=self.b_loc.dtype, device=self.b_loc.device)
        p = self.params_from_flat(eye)                  # linear, no offset: column j = u(e_j)
        flat = [p["b"], p["w"].reshape(T, -1)] + ([p["v"].reshape(T, -1)] if self.n_covariates else [])
        return torch.cat(parts, -1), torch.cat(cols, 1), torch.cat(flat, 1).T

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
