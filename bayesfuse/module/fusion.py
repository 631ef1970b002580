"""Product of Gaussian experts with the prior as one expert (closed form, masked); the modality-hiding modes."""

from __future__ import annotations

import torch

__all__ = ["product_of_experts", "HIDE_FROM", "check_hide_from"]


def product_of_experts(loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor,
                       prior_loc: float | torch.Tensor = 0.0, prior_scale: float | torch.Tensor = 1.0,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fuse Gaussian experts over ``z`` by multiplying their densities.

    Precision ``T = 1/s0^2 + sum_m mask_m / s_m^2`` and mean
    ``mu = (mu0/s0^2 + sum_m mask_m mu_m / s_m^2) / T``: masking an expert equals dropping
    it, the result does not depend on expert order, and a patient with no expert gets the
    prior ``N(mu0, s0^2)``.

    Parameters
    ----------
    loc, scale : Tensor, shape (M, N, D)
        Expert means and standard deviations (``scale > 0``).
    mask : Tensor, shape (M, N)
        1 where patient n has modality m, 0 where absent (any real weights in [0, 1] work).
    prior_loc, prior_scale : float or Tensor broadcastable to (N, D)

    Returns
    -------
    fused_loc, fused_scale : Tensor, shape (N, D)
    expert_precision : Tensor, shape (M, N, D)
        ``mask_m / s_m^2``: each expert's share of the fused precision (0 where absent).
    """
    precision = mask.unsqueeze(-1) / scale.square()
    prior_precision = 1.0 / (torch.as_tensor(prior_scale, dtype=loc.dtype, device=loc.device) ** 2)
    total = prior_precision + precision.sum(0)
    mean = (prior_loc * prior_precision + (precision * loc).sum(0)) / total
    return mean, total.rsqrt(), precision


#: Where a modality hidden by ``modality_mask`` is hidden: ``"both"`` = from the guide and the
#: likelihood (sub-sampled ELBO of the subset); ``"guide"`` = from the guide only (q(z | x_subset)
#: with the likelihood of every observed modality, a cross-modal ELBO of all of x).
HIDE_FROM = ("both", "guide")


def check_hide_from(hide_from: str) -> None:
    """Raise ``ValueError`` unless ``hide_from`` is one of :data:`HIDE_FROM`."""
    if hide_from not in HIDE_FROM:
        raise ValueError(f"hide_from={hide_from!r} is not supported; use one of {HIDE_FROM}.")
