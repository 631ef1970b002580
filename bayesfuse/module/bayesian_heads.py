"""Categorical head with weight uncertainty (Pyro sample sites through the HeadModule hooks).

The weights and biases of every linear layer of the head's network are concatenated into one
flat vector ``theta`` (P,). Model site ``<head>_weights``: ``theta ~ N(0, prior_scale^2 I)``;
guide site: a :class:`bayesfuse.nn.bayesian.WeightPosterior` (mean-field, low-rank or
full-rank Gaussian). One ``theta`` is drawn per SVI step and shared by all patients of the
step; at prediction :meth:`draw_params` draws ``theta`` (S, P) once and every patient of draw
``s`` uses ``theta[s]``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesfuse.module.heads import CategoricalHeadModule
from bayesfuse.nn.bayesian import WeightPosterior

__all__ = ["BayesianCategoricalHeadModule"]


class BayesianCategoricalHeadModule(CategoricalHeadModule):
    """``y | z, theta ~ Categorical(softmax(f_theta(z)))`` with a Gaussian prior and guide on ``theta``.

    Parameters
    ----------
    latent_dim, n_classes, hidden, weight : as :class:`CategoricalHeadModule`.
    prior_scale : float
        Prior standard deviation of every weight and bias.
    guide : {"meanfield", "lowrank", "fullrank"}
        Variational family of ``theta``.
    rank : int
        Rank of the low-rank guide.

    Shapes
    ------
    ``logits_with(z, theta)``: z (N, D) with theta (P,) -> (N, C); z (S, N, D) or (N, D) with
    theta (S, P) -> (S, N, C).
    """

    def __init__(self, latent_dim: int, n_classes: int, hidden: int = 0, weight: float = 1.0,
                 prior_scale: float = 1.0, guide: str = "lowrank", rank: int = 4):
        super().__init__(latent_dim, n_classes, hidden=hidden, weight=weight)
        if not prior_scale > 0:
            raise ValueError(f"prior_scale={prior_scale} must be > 0.")
        self.prior_scale = float(prior_scale)
        self._shapes = [(m.in_features, m.out_features) for m in self.net if isinstance(m, nn.Linear)]
        init = torch.cat([torch.cat([m.weight.detach().T.reshape(-1), m.bias.detach()])
                          for m in self.net if isinstance(m, nn.Linear)])
        # the point-estimate linear layers are replaced by theta; keep LayerNorm etc. as they are
        for m in self.net:
            if isinstance(m, nn.Linear):
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
        self.n_params = int(init.numel())
        self.posterior_q = WeightPosterior(self.n_params, guide, rank, init=init)

    # -------------------------------------------------------------- weights
    def _unflatten(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, i = [], 0
        lead = theta.shape[:-1]
        for fin, fout in self._shapes:
            w = theta[..., i:i + fin * fout].reshape(*lead, fin, fout)
            i += fin * fout
            b = theta[..., i:i + fout]
            i += fout
            out.append((w, b))
        return out

    def logits_with(self, z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        layers = iter(self._unflatten(theta))
        h = z
        for m in self.net:
            if isinstance(m, nn.Linear):
                w, b = next(layers)
                if theta.dim() == 1:
                    h = h @ w + b
                elif h.dim() == 2:
                    h = torch.einsum("ni,sio->sno", h, w) + b.unsqueeze(-2)
                else:
                    h = torch.einsum("sni,sio->sno", h, w) + b.unsqueeze(-2)
            else:
                h = m(h)
        return h

    def prior(self) -> dist.Distribution:
        loc = self.posterior_q.loc
        return dist.Normal(torch.zeros_like(loc), self.prior_scale).to_event(1)

    # ---------------------------------------------------------------- hooks
    def model_params(self, name):
        return {"theta": pyro.sample(f"{name}_weights", self.prior())}

    def guide_params(self, name):
        return {"theta": pyro.sample(f"{name}_weights", self.posterior_q.distribution())}

    def draw_params(self, num_samples):
        return {"theta": self.posterior_q.distribution().sample((int(num_samples),))}

    def log_likelihood(self, z, target, params):
        y = target["y"]
        logp = torch.log_softmax(self.logits_with(z, params["theta"]), dim=-1)
        known = y >= 0
        ll = logp.gather(-1, y.clamp(min=0).expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return ll * known

    def predict(self, z, params):
        return {"probs": torch.softmax(self.logits_with(z, params["theta"]), dim=-1)}

    def log_joint(self, z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, weight: float | None = None
                  ) -> torch.Tensor:
        """``log p(theta) + weight * sum_n log p(y_n | z_n, theta)`` for fixed ``z`` (N, D).

        theta (P,) -> scalar, or (S, P) -> (S,). ``weight`` defaults to the head's ELBO weight.
        """
        w = self.weight if weight is None else float(weight)
        prior = self.prior().log_prob(theta)
        ll = self.log_likelihood(z, {"y": y}, {"theta": theta})
        return prior + w * ll.sum(-1)
