"""The generative model and its amortised guide, written once in Pyro.

Model (per patient n, modalities m present in the patient, heads h)::

    z_n ~ N(0, I_D)
    x_nm | z_n ~ p_m(x | decoder_m(z_n))          (masked cells and absent modalities drop out)
    y_nh | z_n ~ p_h(y | head_h(z_n), theta_h)     (unknown targets drop out)

Guide::

    q(z_n | x_n) = PoE( N(0, I), { N(mu_m(x_nm), s_m(x_nm)^2) : m present } )

The module owns every parameter (``nn.Module`` attributes; no ``pyro.param`` and no use of
Pyro's global param store), so two models in one process never share state.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from bayesfuse.module.batch import Batch
from bayesfuse.module.fused_elbo import fused_elbo_loss
from bayesfuse.module.fusion import HIDE_FROM, check_hide_from, product_of_experts
from bayesfuse.module.heads import HeadModule
from bayesfuse.nn.decoders import Decoder, decoder_log_likelihood
from bayesfuse.nn.encoders import GaussianExpertEncoder

__all__ = ["FusionModule", "HIDE_FROM", "fused_supported"]

class FusionModule(nn.Module):
    """Encoders, decoders and heads of one fusion model.

    Parameters
    ----------
    modality_dims : dict[str, int]
        Feature count ``F_m`` per modality, in model order.
    likelihoods : dict[str, str]
        Decoder likelihood per modality.
    latent_dim : int
        ``D``.
    heads : dict[str, HeadModule]
    hidden : int
        Hidden width of encoders and decoders (0 = linear).
    encoder_dropout : float
    """

    def __init__(self, modality_dims: dict[str, int], likelihoods: dict[str, str], latent_dim: int,
                 heads: dict[str, HeadModule], hidden: int = 128, encoder_dropout: float = 0.1):
        super().__init__()
        self.modalities = list(modality_dims)
        self.latent_dim = int(latent_dim)
        self.likelihoods = dict(likelihoods)
        self.encoders = nn.ModuleDict({m: GaussianExpertEncoder(f, latent_dim, hidden, encoder_dropout)
                                       for m, f in modality_dims.items()})
        self.decoders = nn.ModuleDict({m: Decoder(latent_dim, f, likelihoods[m], hidden)
                                       for m, f in modality_dims.items()})
        self.heads = nn.ModuleDict(heads)
        # per-modality multiplier of each expert's precision (M,): 1 while training; fitted after SVI on
        # held-out patients by bayesfuse.model.modality_reliability (a buffer: saved with the weights)
        self.register_buffer("reliability", torch.ones(len(self.modalities)))

    # ------------------------------------------------------------- inference
    def experts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert parameters of every modality: loc, scale (M, B, D)."""
        outs = [self.encoders[m](batch.encoder_input[m]) for m in self.modalities]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])

    def posterior(self, batch: Batch, modality_mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused posterior of z: loc, scale (B, D) and expert precisions (M, B, D).

        ``modality_mask`` (M, B) multiplies the presence mask (used to hide modalities), and so
        does :attr:`reliability` (M,), each expert's precision multiplier (1 unless fitted).
        """
        loc, scale = self.experts(batch)
        mask = batch.presence if modality_mask is None else batch.presence * modality_mask
        return product_of_experts(loc, scale, mask * self.reliability.to(mask.dtype).unsqueeze(-1))

    # ------------------------------------------------------------- Pyro model
    def model(self, batch: Batch, n_total: int, kl_scale: float = 1.0,
              modality_mask: torch.Tensor | None = None, hide_from: str = "both") -> None:
        """Pyro model of the observed modalities and the known targets.

        With a ``modality_mask`` and ``hide_from="both"`` (default) the step's objective is the
        ELBO of the unmasked subset (the MVAE sub-sampled ELBO, Wu & Goodman 2018): a hidden
        modality is neither encoded by the guide nor reconstructed here. With
        ``hide_from="guide"`` the hidden modality is still reconstructed (only the guide drops
        it): a valid ELBO of all of x whose guide is q(z | x_subset); it trains cross-modal
        prediction directly but pulls q(z | x_subset) towards p(z | x_all), i.e. makes subset
        posteriors over-confident (measured in tests/test_cross_modal_objective.py, docs/imputation.md).
        """
        check_hide_from(hide_from)
        head_params = self.sample_head_params(guide=False)
        hide = modality_mask is not None and hide_from == "both"
        presence = batch.presence * modality_mask if hide else batch.presence
        dtype, device = batch.presence.dtype, batch.presence.device
        zeros = torch.zeros(batch.size, self.latent_dim, dtype=dtype, device=device)
        decoded = {}
        with pyro.plate("patients", n_total, subsample=batch.index, dim=-1):
            with poutine.scale(scale=kl_scale):
                z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            for i, m in enumerate(self.modalities):
                params = decoded[m] = self.decoders[m](z)
                ll = decoder_log_likelihood(self.likelihoods[m], params, batch.observed[m],
                                            batch.cell_mask[m], batch.library[m])
                pyro.factor(f"x_{m}", ll * presence[i])
            for h, head in self.heads.items():
                ll = head.log_likelihood(z, self.head_target(h, batch, z, decoded, modality_mask), head_params[h])
                pyro.factor(f"y_{h}", head.weight * ll)

    def guide(self, batch: Batch, n_total: int, kl_scale: float = 1.0,
              modality_mask: torch.Tensor | None = None, hide_from: str = "both") -> None:
        """Amortised guide: product of the present, unmasked modalities' experts and the prior.

        ``hide_from`` is accepted for signature symmetry with :meth:`model` (the guide always
        drops masked modalities).
        """
        check_hide_from(hide_from)
        self.sample_head_params(guide=True)
        loc, scale, _ = self.posterior(batch, modality_mask)
        with pyro.plate("patients", n_total, subsample=batch.index, dim=-1):
            with poutine.scale(scale=kl_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def forward(self, batch: Batch, n_total: float, kl_scale: float = 1.0, num_particles: int = 1,
                modality_mask: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                hide_from: str = "both") -> torch.Tensor:
        """Negative ELBO of ``batch`` (the fused evaluation of :meth:`model`/:meth:`guide`).

        See :func:`bayesfuse.module.fused_elbo.fused_elbo_loss`; ``forward`` exists so that
        ``DistributedDataParallel(module)(batch, ...)`` all-reduces the gradients.
        """
        return fused_elbo_loss(self, batch, n_total, kl_scale, num_particles, modality_mask, eps=eps,
                               hide_from=hide_from)

    # ------------------------------------------------- direct covariates of heads
    def head_covariates(self, h: str, batch: Batch, z: torch.Tensor, decoded: dict | None = None,
                        modality_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """Covariates ``x_c`` of head ``h`` (its ``covariates`` modalities, concatenated); None if it has none.

        Observed cells of present (and, with ``modality_mask``, unmasked) modalities are the
        standardised encoder inputs; absent or masked modalities and missing cells are the
        decoder mean ``E[x_c | z]`` at the sampled ``z`` (same standardised space: Gaussian
        decoders only, checked at model construction).

        Parameters
        ----------
        z : Tensor (..., B, D)
        decoded : dict[str, dict[str, Tensor]], optional
            Decoder outputs at ``z`` already computed (reused; otherwise the decoder is run
            only when some value must be filled).
        modality_mask : Tensor (M, B), optional
            Modality-dropout mask: a modality hidden from the encoder is hidden here too.

        Returns
        -------
        Tensor (..., B, C) or None
        """
        mods = getattr(self.heads[h], "covariates", None)
        if not mods:
            return None
        presence = batch.presence if modality_mask is None else batch.presence * modality_mask
        parts = []
        for m in mods:
            x = batch.encoder_input[m]                                          # (B, F)
            keep = (batch.cell_mask[m] * presence[self.modalities.index(m)].unsqueeze(-1)) > 0
            if decoded is None and bool(keep.all()):                            # prediction: nothing to fill
                parts.append(x.expand(*z.shape[:-1], x.shape[-1]))
                continue
            loc = (decoded[m] if decoded is not None and m in decoded else self.decoders[m](z))["loc"]
            parts.append(torch.where(keep, x, loc))                             # (..., B, F)
        return torch.cat(parts, dim=-1)

    def head_target(self, h: str, batch: Batch, z: torch.Tensor, decoded: dict | None = None,
                    modality_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``batch.targets[h]``, plus ``"covariates"`` (..., B, C) for a head with a direct covariate path."""
        x = self.head_covariates(h, batch, z, decoded, modality_mask)
        return batch.targets[h] if x is None else {**batch.targets[h], "covariates": x}

    def head_inputs(self, h: str, batch: Batch, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra keyword arguments of ``heads[h].predict`` (``covariates`` where the head has them)."""
        x = self.head_covariates(h, batch, z)
        return {} if x is None else {"covariates": x}

    # --------------------------------------------------------------- helpers
    def sample_head_params(self, guide: bool) -> dict[str, dict[str, torch.Tensor]]:
        """Sample every head's global parameters from its prior (``guide=False``) or guide.

        The sites are scaled by the head's ELBO weight ``w``: with the likelihood also
        multiplied by ``w``, the parameter part of the ELBO is ``w * (E log lik - KL)``, whose
        optimum is the UNtempered posterior of the head parameters given ``z``, while the
        encoders still receive the ``w``-weighted label signal.
        """
        out = {}
        for h, head in self.heads.items():
            with poutine.scale(scale=head.weight):
                out[h] = head.guide_params(f"{h}") if guide else head.model_params(f"{h}")
        return out

    def random_modality_mask(self, presence: torch.Tensor, p_drop: float,
                             u: torch.Tensor | None = None) -> torch.Tensor:
        """Hide each present modality with probability ``p_drop``, keeping at least one.

        presence (M, B) -> mask (M, B) of 0/1. Vectorised: where every present modality
        was dropped, the present modality with the largest uniform draw is restored.
        ``u`` (M, B): the uniform draws to use (default: fresh ``torch.rand``).
        """
        if p_drop <= 0 or presence.shape[0] < 2:
            return torch.ones_like(presence)
        if u is None:
            u = torch.rand(presence.shape, dtype=presence.dtype, device=presence.device)
        keep = (u >= p_drop).to(presence.dtype) * presence
        none_left = (keep.sum(0) == 0) & (presence.sum(0) > 0)
        rows = torch.arange(presence.shape[0], device=presence.device).unsqueeze(1)
        restore = (rows == (u * presence).argmax(0).unsqueeze(0)).to(presence.dtype)  # one-hot (M, B), no sync
        keep = torch.where(none_left.unsqueeze(0), restore * presence, keep)
        return torch.where(presence > 0, keep, torch.ones_like(keep))


def fused_supported(module) -> bool:
    """True when :func:`fused_elbo_loss` evaluates exactly ``module``'s model/guide.

    That is :class:`FusionModule`'s own model and guide, or a subclass whose only addition to
    the model is a global ``weight_kl()`` factor (``BayesianFusionModule``). Anything else
    falls back to Pyro's ``Trace_ELBO``.
    """
    cls = type(module)
    if cls.guide is not FusionModule.guide:
        return False
    return cls.model is FusionModule.model or (cls.__name__ == "BayesianFusionModule" and hasattr(module, "weight_kl"))
