"""Probabilistic encoders: one per modality, each a Gaussian expert over the shared latent."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GaussianExpertEncoder", "mlp"]

_MIN_SCALE = 1e-3


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0, n_layers: int = 1) -> nn.Sequential:
    """``in -> [Linear, LayerNorm, GELU, Dropout] x n_layers -> Linear -> out``; ``hidden=0`` = linear."""
    if hidden == 0 or n_layers == 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_layers):
        layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class GaussianExpertEncoder(nn.Module):
    """Map a modality's features to a Gaussian expert ``N(loc, scale^2)`` over ``z``.

    Parameters
    ----------
    in_dim : int
        Number of features ``F`` of the modality.
    latent_dim : int
        Dimension ``D`` of ``z``.
    hidden : int
        Hidden width (0 = a linear encoder, used for the closed-form tests).
    dropout : float
        Dropout on the hidden layer during training.

    Shapes
    ------
    ``forward(x)``: x (N, F) -> loc (N, D), scale (N, D) with scale >= 1e-3.
    """

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 128, dropout: float = 0.1, n_layers: int = 1):
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * latent_dim, dropout=dropout, n_layers=n_layers)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        loc, raw = out.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + _MIN_SCALE
