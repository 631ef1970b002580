"""FusionModule with weight uncertainty (``FusionModel(bayesian=...)``).

Modes
-----
``"heads"``            categorical heads get a Gaussian posterior over their weights (sample sites).
``"encoders+heads"``   plus :class:`~bayesfuse.nn.bayesian.BayesLinear` encoders (local reparameterisation).
``"all"``              plus Bayesian decoders.
``"mc_dropout"``       deterministic weights; encoder dropout stays on at prediction (one mask per draw).

How the weight KL enters the ELBO: head weights are Pyro sample sites (prior in the model,
Gaussian guide), so ``Trace_ELBO`` estimates their KL by Monte Carlo. Encoder/decoder layers
use the local reparameterisation trick, which samples pre-activations instead of weights, so
their analytic KL enters the model as ``pyro.factor("kl_weights", -kl_scale * KL)`` outside the
patient plate (not rescaled by minibatch subsampling; annealed with the same KL warm-up as z).
"""

from __future__ import annotations

from contextlib import contextmanager

import pyro
import torch

from bayesfuse.module.batch import Batch
from bayesfuse.module.fusion import product_of_experts
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.heads import CategoricalHeadModule, HeadModule
from bayesfuse.nn.bayesian import bayesianize, mc_dropoutize, weight_draws, weight_kl

__all__ = ["BAYESIAN_MODES", "BayesianFusionModule", "bayesian_heads"]

BAYESIAN_MODES = ("none", "heads", "encoders+heads", "all", "mc_dropout")


def bayesian_heads(heads: dict[str, HeadModule], prior_scale: float, guide: str, rank: int) -> dict[str, HeadModule]:
    """Swap each point-estimate categorical head for its Bayesian version (others unchanged)."""
    from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule  # noqa: PLC0415

    out = {}
    for k, h in heads.items():
        if type(h) is CategoricalHeadModule:
            hidden = sum(isinstance(m, torch.nn.Linear) for m in h.net) > 1
            new = BayesianCategoricalHeadModule(h.net[0].in_features, h.net[-1].out_features,
                                                hidden=h.net[0].out_features if hidden else 0, weight=h.weight,
                                                prior_scale=prior_scale, guide=guide, rank=rank)
            out[k] = new
        else:
            out[k] = h
    return out


class BayesianFusionModule(FusionModule):
    """:class:`FusionModule` with Bayesian heads / encoders / decoders or MC dropout.

    Extra parameters
    ----------------
    bayesian : one of :data:`BAYESIAN_MODES` except ``"none"``.
    prior_scale : float
        Prior sd of every Bayesian weight.
    head_guide : {"meanfield", "lowrank", "fullrank"}
    guide_rank : int
    encoder_layers : {"last", "all"}
        Which linear layers of each encoder (and decoder, in ``"all"``) get weight uncertainty:
        the output layer only (default: cheap, see docs/bayesian.md) or every layer.
    """

    def __init__(self, modality_dims, likelihoods, latent_dim, heads, hidden=128, encoder_dropout=0.1,
                 bayesian: str = "heads", prior_scale: float = 1.0, head_guide: str = "lowrank", guide_rank: int = 4,
                 encoder_layers: str = "last"):
        if bayesian not in BAYESIAN_MODES or bayesian == "none":
            raise ValueError(f"bayesian={bayesian!r}; BayesianFusionModule takes one of {BAYESIAN_MODES[1:]}.")
        if bayesian == "mc_dropout" and not (encoder_dropout > 0 and hidden > 0):
            raise ValueError("bayesian='mc_dropout' needs encoder_dropout > 0 (e.g. 0.1) and hidden > 0 "
                             "(a linear encoder has no dropout layer).")
        if bayesian in ("heads", "encoders+heads", "all"):
            heads = bayesian_heads(heads, prior_scale, head_guide, guide_rank)
        super().__init__(modality_dims, likelihoods, latent_dim, heads, hidden, encoder_dropout)
        self.bayesian = bayesian
        if bayesian in ("encoders+heads", "all"):
            bayesianize(self.encoders, prior_scale, layers=encoder_layers)
        if bayesian == "all":
            bayesianize(self.decoders, prior_scale, layers=encoder_layers)
        self.encoder_layers = encoder_layers
        if bayesian == "mc_dropout":
            mc_dropoutize(self.encoders)

    def weight_kl(self) -> torch.Tensor | None:
        """Analytic KL of the local-reparameterised encoder/decoder weights (None if there are none)."""
        kls = [k for k in (weight_kl(self.encoders), weight_kl(self.decoders)) if k is not None]
        return torch.stack(kls).sum() if kls else None

    def model(self, batch: Batch, n_total: int, kl_scale: float = 1.0,
              modality_mask: torch.Tensor | None = None, hide_from: str = "both") -> None:
        kl = self.weight_kl()
        if kl is not None:
            pyro.factor("kl_weights", -kl_scale * kl)  # outside the patient plate: counted once per cohort
        super().model(batch, n_total, kl_scale, modality_mask, hide_from)

    # ------------------------------------------------------------ prediction
    @contextmanager
    def prediction_draws(self, num_samples: int):
        """Draw encoder weights / dropout masks once for ``num_samples`` draws (shared by all patients)."""
        with weight_draws(self.encoders, num_samples):
            yield

    def posterior_draws(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused posterior of ``z`` per weight draw (inside :meth:`prediction_draws`).

        Returns loc, scale of shape (S, B, D) when the encoders are stochastic, else (B, D),
        and the expert precisions (M, S, B, D) or (M, B, D).
        """
        loc, scale = self.experts(batch)
        mask = batch.presence * self.reliability.to(batch.presence.dtype).unsqueeze(-1)
        if loc.dim() == 4:  # (M, S, B, D)
            mask = mask.unsqueeze(1)
        return product_of_experts(loc, scale, mask)


def summarise_draws(loc: torch.Tensor, scale: torch.Tensor, prec: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse per-draw posteriors (S, B, D) to the moments of their mixture (B, D); prec (M, S, B, D) -> (M, B, D)."""
    if loc.dim() == 2:
        return loc, scale, prec
    mean = loc.mean(0)
    var = (scale.square() + loc.square()).mean(0) - mean.square()
    return mean, var.clamp(min=0).sqrt(), prec.mean(1)
