"""Torch modules of the supervised heads on ``z`` (built from :mod:`bayesfuse.heads` specs)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from bayesfuse.nn.encoders import mlp

__all__ = ["HeadModule", "CategoricalHeadModule", "temper_probs"]


class HeadModule(nn.Module, ABC):
    """Abstract head: a likelihood ``p(target | z, theta)``.

    Heads with weight uncertainty register Pyro sample sites for ``theta`` in
    :meth:`model_params` / :meth:`guide_params` and draw them in :meth:`draw_params`;
    point-estimate heads keep the defaults (no sites, empty dict).
    """

    weight: float = 1.0

    def model_params(self, name: str) -> dict[str, torch.Tensor]:
        """Sample global head parameters from their prior (inside the Pyro model)."""
        return {}

    def guide_params(self, name: str) -> dict[str, torch.Tensor]:
        """Sample global head parameters from the variational posterior (inside the guide)."""
        return {}

    def draw_params(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of the parameters from the guide, leading dim (S, ...)."""
        return {}

    @abstractmethod
    def log_likelihood(self, z: torch.Tensor, target: dict[str, torch.Tensor],
                       params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-patient log-likelihood (0 where the target is unknown); z (..., B, D) -> (..., B)."""

    @abstractmethod
    def predict(self, z: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Posterior-predictive quantities for z (S, N, D); each output has leading (S, N)."""


class CategoricalHeadModule(HeadModule):
    """``y | z ~ Categorical(logits = f(z))`` with ``f`` linear or a one-hidden-layer MLP.

    Shapes: ``logits(z)``: (..., N, D) -> (..., N, C); ``predict`` returns ``probs`` (S, N, C).
    """

    def __init__(self, latent_dim: int, n_classes: int, hidden: int = 0, weight: float = 1.0):
        super().__init__()
        self.net = mlp(latent_dim, hidden, n_classes)
        self.weight = float(weight)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def log_likelihood(self, z, target, params):
        y = target["y"]
        logp = torch.log_softmax(self.logits(z), dim=-1)
        known = y >= 0
        ll = logp.gather(-1, y.clamp(min=0).expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return ll * known

    def predict(self, z, params):
        # softmax over a leading axis: much faster on CPU than over a short last axis (C classes)
        logits = self.logits(z).movedim(-1, 0).contiguous()
        return {"probs": torch.softmax(logits, dim=0).movedim(0, -1)}


def temper_probs(probs: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``softmax(log p / T)`` per patient: probs (S, N, C), temperature (N,) -> (S, N, C).

    Equal to ``softmax(logits / T)`` of the logits behind ``probs`` (the log-normaliser is a
    per-row constant); probabilities that underflowed to 0 stay 0.
    """
    tiny = torch.finfo(probs.dtype).tiny
    logits = (torch.log(probs.clamp_min(tiny)) / temperature.unsqueeze(-1)).movedim(-1, 0).contiguous()
    return torch.softmax(logits, dim=0).movedim(0, -1)
