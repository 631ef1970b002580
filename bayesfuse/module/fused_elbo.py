"""The ELBO of :class:`FusionModule` in one fused, vectorised torch computation.

:meth:`FusionModule.model` / :meth:`FusionModule.guide` (Pyro) stay the single source of
truth for the math; this file evaluates *the same* estimator as Pyro's ``Trace_ELBO`` of that
model/guide pair, without building Pyro traces for the per-patient sites:

* one encoder pass per modality, then the masked product of experts (no branches on presence),
* ``z = loc + scale * eps`` for all particles at once (``eps`` of shape (P, B, D)),
* the KL term in the reparameterised Monte-Carlo form Pyro uses
  (``kl_scale * [log p(z) - log q(z)]``, the ``0.5 log 2 pi`` constants cancel),
* every modality's decoder log-likelihood weighted by its (presence x modality-dropout) mask, every head's
  weighted log-likelihood, summed and scaled by the plate's ``n_total / B``.

Heads with global sample sites (Bayesian head weights; :meth:`HeadModule.model_params`
overridden) keep their Pyro sites: :func:`fused_elbo_loss` traces ``guide_params`` and replays
``model_params`` on it (a few small tensors), so any head written against the
:class:`HeadModule` hooks works unchanged.

Random draws are consumed in the guide's order (head guide sites, encoder dropout, ``eps``),
so with one particle the fused loss equals ``Trace_ELBO().differentiable_loss`` at the same
parameters and seed up to float rounding (``tests/test_perf.py``).
"""

from __future__ import annotations

import torch
from pyro import poutine

from bayesfuse.module.batch import Batch
from bayesfuse.module.fusion import check_hide_from
from bayesfuse.module.heads import HeadModule
from bayesfuse.nn.decoders import decoder_log_likelihood

__all__ = ["fused_elbo_loss", "has_global_head_sites"]


def has_global_head_sites(module) -> bool:
    """True when some head registers Pyro sample sites for global parameters."""
    return any(type(h).model_params is not HeadModule.model_params for h in module.heads.values())


def _head_global_terms(module) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor | float]:
    """Draw global head parameters from the guide; return them and ``log p - log q`` of those sites."""
    if not has_global_head_sites(module):
        return {h: {} for h in module.heads}, 0.0

    def guide_part():
        return module.sample_head_params(guide=True)

    def model_part():
        return module.sample_head_params(guide=False)

    guide_tr = poutine.trace(guide_part).get_trace()
    model_tr = poutine.trace(poutine.replay(model_part, trace=guide_tr)).get_trace()
    params = model_tr.nodes["_RETURN"]["value"]
    return params, model_tr.log_prob_sum() - guide_tr.log_prob_sum()


def fused_elbo_loss(module, batch: Batch, n_total: int, kl_scale: float = 1.0, num_particles: int = 1,
                    modality_mask: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                    hide_from: str = "both") -> torch.Tensor:
    """Negative ELBO of ``batch`` scaled to ``n_total`` patients, as Pyro's ``Trace_ELBO`` computes it.

    Parameters
    ----------
    module : FusionModule
    batch : Batch
        ``B`` patients (tensors on the module's device).
    n_total : int
        Cohort size (the patient plate's size; the minibatch sum is scaled by ``n_total / B``).
    kl_scale : float
        Weight of ``log p(z) - log q(z)`` (KL warm-up).
    num_particles : int
        ``P`` Monte-Carlo particles, vectorised: ``eps`` has shape (P, B, D). With ``P > 1``
        and heads with global sites, use Pyro's ``Trace_ELBO`` instead (see
        :func:`bayesfuse.train.svi.elbo_loss`).
    modality_mask : Tensor (M, B), optional
        Multiplies the presence mask in the guide, and in the likelihood when
        ``hide_from="both"`` (modality dropout).
    eps : Tensor (B, D) or (P, B, D), optional
        Standard-normal noise to use instead of fresh draws (data-parallel training slices
        one global draw so that the result does not depend on the number of ranks).
    hide_from : {"both", "guide"}
        As in :meth:`FusionModule.model`: ``"guide"`` reconstructs masked modalities from
        ``q(z | x_unmasked)``.

    Returns
    -------
    Tensor, shape ()
        ``-ELBO`` averaged over particles (differentiable).
    """
    check_hide_from(hide_from)
    params, global_term = _head_global_terms(module)
    loc, scale, _ = module.posterior(batch, modality_mask)  # (B, D)
    shape = (num_particles, *loc.shape) if num_particles > 1 else tuple(loc.shape)
    if eps is None:
        eps = torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_()
    elif tuple(eps.shape) != shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)}; expected {shape} (num_particles, batch, latent).")
    z = loc + eps * scale  # (P, B, D) or (B, D)
    # log N(z; 0, I) - log N(z; loc, scale): constants cancel, (z - loc) / scale = eps.
    log_w = kl_scale * (0.5 * (eps.square() - z.square()) + scale.log()).sum(-1)  # (P, B)
    # As in FusionModule.model: with hide_from="both" a masked modality is not reconstructed either.
    hide = modality_mask is not None and hide_from == "both"
    presence = batch.presence * modality_mask if hide else batch.presence
    decoded = {}
    for i, m in enumerate(module.modalities):
        dec_params = decoded[m] = module.decoders[m](z)
        ll = decoder_log_likelihood(module.likelihoods[m], dec_params, batch.observed[m],
                                    batch.cell_mask[m], batch.library[m])
        log_w = log_w + ll * presence[i]
    for h, head in module.heads.items():
        target = module.head_target(h, batch, z, decoded, modality_mask)   # + direct covariates, if any
        log_w = log_w + head.weight * head.log_likelihood(z, target, params[h])
    elbo = log_w.sum(-1) * (n_total / batch.size)
    weight_kl = getattr(module, "weight_kl", None)  # BayesianFusionModule: factor -kl_scale * KL(weights)
    if weight_kl is not None:
        kl = weight_kl()
        if kl is not None:
            global_term = global_term - kl_scale * kl
    if num_particles > 1:
        elbo = elbo.mean(0)
    return -(elbo + global_term)
