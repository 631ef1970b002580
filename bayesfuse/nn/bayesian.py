"""Bayesian layers: weight uncertainty for encoders, decoders and heads.

Two estimators, each where it is cheapest:

* :class:`BayesLinear` (encoders / decoders): mean-field Gaussian weights trained with the
  *local reparameterisation trick* (Kingma, Salimans & Welling 2015): during SVI the
  pre-activations ``a = x W + b`` are sampled from their exact Gaussian
  ``N(x mu_W + mu_b, x^2 s_W^2 + s_b^2)``, one independent draw per patient, which has lower
  variance than sampling ``W`` and costs two matmuls. Because no weight is sampled, the KL
  of the weights to their prior cannot enter the ELBO as a Pyro sample site; it enters as
  the *analytic* ``KL(q(W) || N(0, prior_scale^2))`` through ``pyro.factor("kl_weights", -KL)``
  in the model, **outside** the patient plate (so minibatch subsampling does not rescale it).
* :class:`WeightPosterior` (heads, a few hundred weights at most): a Gaussian over the flat
  weight vector ``theta`` (mean-field, low-rank or full-rank), sampled as a Pyro sample site
  once per SVI step and shared by every patient of the step; the prior is the matching
  model site, and ``Trace_ELBO`` estimates the KL by Monte Carlo.

At prediction time weights are drawn **once per posterior draw and shared by all patients**:
:func:`weight_draws` puts every :class:`BayesLinear` (and :class:`DrawDropout`) of a module into
draw mode with ``S`` draws, ``W`` of shape (S, in, out), and layers contract with ``einsum``
so inputs (N, in) or (S, N, in) give outputs (S, N, out).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BayesLinear", "DrawDropout", "WeightPosterior", "bayesianize", "weight_draws", "weight_kl",
           "GUIDE_FAMILIES"]

GUIDE_FAMILIES = ("meanfield", "lowrank", "fullrank")


def _normal_kl(loc: torch.Tensor, log_scale: torch.Tensor, prior_scale: float) -> torch.Tensor:
    """Sum of ``KL(N(loc, exp(log_scale)^2) || N(0, prior_scale^2))`` over all elements."""
    var_ratio = torch.exp(2 * log_scale) / prior_scale**2
    return 0.5 * (var_ratio + loc.square() / prior_scale**2 - 1.0 - torch.log(var_ratio)).sum()


class BayesLinear(nn.Module):
    """Linear layer with a mean-field Gaussian posterior over weights and bias.

    Parameters
    ----------
    in_features, out_features : int
    prior_scale : float
        Standard deviation of the zero-mean Gaussian prior on every weight and bias.
    init_log_scale : float
        Initial ``log`` standard deviation of the variational posterior (small: start near
        the deterministic network).

    Shapes
    ------
    ``forward(x)``: x (..., N, in) -> (..., N, out). In draw mode (inside :func:`weight_draws`)
    x (N, in) or (S, N, in) -> (S, N, out), with the same weights for every patient of a draw.
    """

    def __init__(self, in_features: int, out_features: int, prior_scale: float = 1.0, init_log_scale: float = -5.0):
        super().__init__()
        if not prior_scale > 0:
            raise ValueError(f"prior_scale={prior_scale} must be > 0.")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.prior_scale = float(prior_scale)
        bound = 1.0 / math.sqrt(in_features)
        self.weight_loc = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.weight_log_scale = nn.Parameter(torch.full((in_features, out_features), float(init_log_scale)))
        self.bias_loc = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_log_scale = nn.Parameter(torch.full((out_features,), float(init_log_scale)))
        self._draw: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, layer: nn.Linear, prior_scale: float = 1.0, init_log_scale: float = -5.0) -> BayesLinear:
        """A BayesLinear whose posterior means start at ``layer``'s weights."""
        new = cls(layer.in_features, layer.out_features, prior_scale, init_log_scale)
        with torch.no_grad():
            new.weight_loc.copy_(layer.weight.T)
            new.bias_loc.copy_(layer.bias)
        return new.to(device=layer.weight.device, dtype=layer.weight.dtype)

    def kl(self) -> torch.Tensor:
        """Analytic ``KL(q || prior)`` summed over weights and bias (a scalar)."""
        return (_normal_kl(self.weight_loc, self.weight_log_scale, self.prior_scale)
                + _normal_kl(self.bias_loc, self.bias_log_scale, self.prior_scale))

    def draw(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` weight draws: W (S, in, out), b (S, out)."""
        S = int(num_samples)
        w_eps = torch.randn((S, *self.weight_loc.shape), dtype=self.weight_loc.dtype, device=self.weight_loc.device)
        b_eps = torch.randn((S, *self.bias_loc.shape), dtype=self.bias_loc.dtype, device=self.bias_loc.device)
        return (self.weight_loc + self.weight_log_scale.exp() * w_eps,
                self.bias_loc + self.bias_log_scale.exp() * b_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._draw is not None:
            w, b = self._draw
            if x.dim() == 2:
                return torch.einsum("ni,sio->sno", x, w) + b.unsqueeze(1)
            return torch.einsum("sni,sio->sno", x, w) + b.unsqueeze(1)
        mean = x @ self.weight_loc + self.bias_loc
        var = x.square() @ self.weight_log_scale.mul(2).exp() + self.bias_log_scale.mul(2).exp()
        return mean + var.sqrt() * torch.randn_like(mean)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prior_scale={self.prior_scale}"


class DrawDropout(nn.Dropout):
    """Dropout that, in draw mode, samples one unit mask per draw shared by every patient (MC dropout).

    Training behaviour is that of :class:`torch.nn.Dropout`. Inside :func:`weight_draws`, an
    input (N, H) or (S, N, H) is multiplied by masks (S, 1, H) / (1 - p), i.e. each draw drops
    the same rows of the next layer's weight matrix for all patients.
    """

    def __init__(self, p: float = 0.1):
        super().__init__(p)
        self._num_draws: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._num_draws is None:
            return super().forward(x)
        S = self._num_draws
        keep = torch.rand((S, 1, x.shape[-1]), dtype=x.dtype, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


def bayesianize(module: nn.Module, prior_scale: float = 1.0, init_log_scale: float = -5.0,
                layers: str = "all") -> nn.Module:
    """Replace :class:`torch.nn.Linear` layers inside ``module`` by :class:`BayesLinear` (in place).

    ``layers="all"``: every linear layer. ``layers="last"``: only the last linear layer of each
    :class:`torch.nn.Sequential` that is a direct ``net`` of a child (the output layer of each
    encoder / decoder; hidden layers keep point-estimate weights). The output layer is small
    (hidden x 2D), so weight draws at prediction and the local reparameterisation during
    training cost little, whereas a Bayesian first layer (features x hidden) costs
    ``S x N x F x hidden`` at prediction.
    """
    if layers not in ("all", "last"):
        raise ValueError(f"layers={layers!r}; use 'all' or 'last'.")
    if layers == "last":
        seqs = [m for m in module.modules() if isinstance(m, nn.Sequential)
                and any(isinstance(c, nn.Linear) for c in m)]
        if not seqs:
            raise ValueError("layers='last' found no nn.Sequential with a linear layer inside the module.")
        for seq in seqs:
            i = max(j for j, c in enumerate(seq) if isinstance(c, nn.Linear))
            seq[i] = BayesLinear.from_linear(seq[i], prior_scale, init_log_scale)
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, BayesLinear.from_linear(child, prior_scale, init_log_scale))
        else:
            bayesianize(child, prior_scale, init_log_scale)
    return module


def mc_dropoutize(module: nn.Module) -> nn.Module:
    """Replace every :class:`torch.nn.Dropout` inside ``module`` by a :class:`DrawDropout` (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Dropout) and not isinstance(child, DrawDropout):
            setattr(module, name, DrawDropout(child.p))
        else:
            mc_dropoutize(child)
    return module


def weight_kl(module: nn.Module) -> torch.Tensor | None:
    """Sum of :meth:`BayesLinear.kl` over ``module`` (``None`` when it has no Bayesian layer)."""
    kls = [m.kl() for m in module.modules() if isinstance(m, BayesLinear)]
    return torch.stack(kls).sum() if kls else None


@contextmanager
def weight_draws(module: nn.Module, num_samples: int) -> Iterator[None]:
    """Put ``module`` in draw mode: each :class:`BayesLinear` draws ``S`` weight sets now (once)
    and each :class:`DrawDropout` samples ``S`` masks per call; restored on exit."""
    bayes = [m for m in module.modules() if isinstance(m, BayesLinear)]
    drops = [m for m in module.modules() if isinstance(m, DrawDropout)]
    try:
        for m in bayes:
            m._draw = m.draw(num_samples)
        for m in drops:
            m._num_draws = int(num_samples)
        yield
    finally:
        for m in bayes:
            m._draw = None
        for m in drops:
            m._num_draws = None


class WeightPosterior(nn.Module):
    """Gaussian variational posterior over a flat weight vector ``theta`` of size ``P``.

    Parameters
    ----------
    size : int
        ``P``.
    family : {"meanfield", "lowrank", "fullrank"}
        ``meanfield``: ``N(mu, diag(s^2))``; ``lowrank``: ``N(mu, F F^T + diag(s^2))`` with
        ``F`` of shape (P, rank); ``fullrank``: ``N(mu, L L^T)`` with ``L = diag(s) (I + strictly_lower(T))``.
    rank : int
        Rank of the low-rank factor.
    init : torch.Tensor, optional
        Initial mean (P,).
    init_scale : float
        Initial marginal standard deviation.
    """

    def __init__(self, size: int, family: str = "lowrank", rank: int = 4, init: torch.Tensor | None = None,
                 init_scale: float = 0.01):
        super().__init__()
        if family not in GUIDE_FAMILIES:
            raise ValueError(f"guide family {family!r} unknown; use one of {GUIDE_FAMILIES}.")
        self.family, self.size, self.rank = family, int(size), int(rank)
        self.loc = nn.Parameter(init.clone().detach() if init is not None else torch.zeros(size))
        self.raw_scale = nn.Parameter(torch.full((size,), math.log(math.expm1(init_scale))))
        if family == "lowrank":
            self.cov_factor = nn.Parameter(torch.randn(size, self.rank) * init_scale * 0.1)
        elif family == "fullrank":
            self.tril = nn.Parameter(torch.zeros(size, size))

    def scale_diag(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + 1e-6

    def distribution(self) -> dist.Distribution:
        """The guide distribution, event shape (P,)."""
        s = self.scale_diag()
        if self.family == "meanfield":
            return dist.Normal(self.loc, s).to_event(1)
        if self.family == "lowrank":
            return dist.LowRankMultivariateNormal(self.loc, self.cov_factor, s.square())
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril())

    def marginal_sd(self) -> torch.Tensor:
        """Marginal posterior standard deviation of each coordinate (P,)."""
        s = self.scale_diag()
        if self.family == "meanfield":
            return s
        if self.family == "lowrank":
            return (s.square() + self.cov_factor.square().sum(-1)).sqrt()
        return self.scale_tril().square().sum(-1).sqrt()

    def scale_tril(self) -> torch.Tensor:
        """Full-rank Cholesky factor ``L = diag(s) (I + strictly_lower(T))`` (P, P).

        Row scaling by ``s`` keeps ``L`` well conditioned when the posterior is much narrower
        than the prior (the unit-diagonal factor carries only correlations), as in Pyro's
        AutoMultivariateNormal.
        """
        s = self.scale_diag()
        unit = torch.tril(self.tril, diagonal=-1) + torch.eye(self.size, dtype=s.dtype, device=s.device)
        return s.unsqueeze(-1) * unit
