"""Decoders ``p(x_m | z)`` with a likelihood that fits each data type."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bayesfuse.nn.encoders import mlp

__all__ = ["Decoder", "decoder_log_likelihood"]

_MIN_SCALE = 1e-3


class Decoder(nn.Module):
    """Decoder of one modality.

    Parameters
    ----------
    latent_dim, out_dim : int
        ``D`` and the number of features ``F``.
    likelihood : {"gaussian", "bernoulli", "poisson", "negbinom"}
    hidden : int
        Hidden width (0 = linear).

    Shapes
    ------
    ``forward(z)`` with z (..., N, D) returns a dict of likelihood parameters, each (..., N, F):
    gaussian ``loc``/``scale`` (per-feature learned scale), bernoulli ``logits``,
    poisson/negbinom ``logit_rate`` (log-softmax over features; rate = library * softmax)
    and, for negbinom, ``log_theta`` (per-feature inverse dispersion, broadcast).
    """

    def __init__(self, latent_dim: int, out_dim: int, likelihood: str, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.likelihood = likelihood
        self.net = mlp(latent_dim, hidden, out_dim, dropout=dropout)
        if likelihood == "gaussian":
            self.raw_scale = nn.Parameter(torch.zeros(out_dim))
        elif likelihood == "negbinom":
            self.log_theta = nn.Parameter(torch.full((out_dim,), 1.0))

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(z)
        if self.likelihood == "gaussian":
            return {"loc": out, "scale": F.softplus(self.raw_scale + 0.5413) + _MIN_SCALE}  # softplus(.5413)~1
        if self.likelihood == "bernoulli":
            return {"logits": out}
        params = {"log_rate_share": torch.log_softmax(out, dim=-1)}
        if self.likelihood == "negbinom":
            params["log_theta"] = self.log_theta
        return params


def decoder_log_likelihood(likelihood: str, params: dict[str, torch.Tensor], x: torch.Tensor,
                           cell_mask: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """Sum over observed features of ``log p(x | params)``; shape (..., N).

    ``x``, ``cell_mask`` (N, F); ``library`` (N,). Written out by hand (no
    ``torch.distributions`` object per call) so it stays fused and cheap; each formula is
    checked against ``torch.distributions`` / scipy in ``tests/test_nn.py``.
    """
    if likelihood == "gaussian":
        loc, scale = params["loc"], params["scale"]
        if scale.dim() == 1:  # per-feature scale (the Decoder's): the log-normaliser is a mat-vec
            quad = (((x - loc) * scale.reciprocal()).square() * cell_mask).sum(-1)
            return -0.5 * quad - cell_mask @ (torch.log(scale) + 0.9189385332046727)
        ll = -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.9189385332046727
    elif likelihood == "bernoulli":
        logits = params["logits"]
        ll = x * logits - F.softplus(logits)
    else:
        log_mu = params["log_rate_share"] + torch.log(library).unsqueeze(-1)
        if likelihood == "poisson":
            ll = x * log_mu - torch.exp(log_mu) - torch.lgamma(x + 1)
        else:
            log_theta = params["log_theta"]
            theta = torch.exp(log_theta)
            log_theta_mu = torch.logaddexp(log_theta, log_mu)
            ll = (theta * (log_theta - log_theta_mu) + x * (log_mu - log_theta_mu)
                  + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    return (ll * cell_mask).sum(-1)
