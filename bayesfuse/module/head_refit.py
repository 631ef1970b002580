"""Refit the Gaussian posterior of Bayesian head weights given the fitted latent guide.

After SVI the head-weight guide ``q(theta)`` has had only a few hundred joint steps (early
stopping ends the fit when the *encoders* stop improving), which is too few for a full-rank
Gaussian started at sd 0.01 to reach its optimum; its k-hat on real data was 2.9. With the
encoders fixed, the optimal ``q(theta)`` of the ELBO is the Gaussian closest to
``q*(theta) ∝ exp(E_q(z|x)[log p(theta) + sum_n log p(y_n | z_n, theta)])`` (coordinate ascent;
the head's ELBO weight cancels because it scales the head's likelihood *and* its global
sites, see :meth:`FusionModule.sample_head_params`). That is a small problem (``P`` <= a few
hundred weights, ``N`` labelled patients) solved here by reparameterised SVI with the exact
entropy of the Gaussian, fresh ``z ~ q(z | x)`` draws every step. It is the same target the
PSIS k-hat of :func:`bayesfuse.diagnostics.vi.head_weight_diagnostics` checks.
"""

from __future__ import annotations

import torch

__all__ = ["refit_head_posterior"]


def refit_head_posterior(head, loc: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, steps: int = 600,
                         lr: float = 0.02, num_particles: int = 8, generator: torch.Generator | None = None,
                         z_sampler=None, likelihood_power: float = 1.0,
                         patient_weight: torch.Tensor | None = None) -> list[float]:
    """Fit ``head.posterior_q`` to the head-weight posterior given ``z ~ N(loc, scale^2)``.

    Parameters
    ----------
    head : BayesianCategoricalHeadModule
    loc, scale : Tensor (N, D)
        Fitted latent guide of the labelled training patients.
    y : Tensor (N,) long
        Class index per patient (all known).
    steps, lr : int, float
        Adam steps and learning rate on the guide's parameters only.
    num_particles : int
        ``K`` pairs (theta_k, z_k) per step: theta (K, P) from the guide, z (K, N, D) from the latent guide.
    generator : torch.Generator, optional
        Source of the noise (default: the global RNG).
    z_sampler : callable, optional
        ``z_sampler(K) -> z (K, N, D)``: draws of the latents to condition on, replacing
        ``loc + scale * eps`` (used for the sub-sampled-ELBO refit, :func:`refit_module_heads`
        with ``modality_dropout > 0``).
    likelihood_power : float
        ``eta`` in (0, 1]: the target becomes the generalised ("power") posterior
        ``q*(theta) ∝ p(theta) exp(eta E_q(z|x)[sum_n log p(y_n | z_n, theta)])`` (eta = 1: the
        Bayesian posterior, default; eta < 1 discounts the labels, cf. SafeBayes, Grünwald 2012).
    patient_weight : Tensor (N,), optional
        Non-negative multiplier of each patient's log-likelihood (default: all 1). Used by the
        cross-fitted ensemble (:mod:`bayesfuse.model.crossfit`) to down-weight in-sample
        latents next to held-out ones.

    Returns
    -------
    list[float]
        Negative objective (nats per patient) every step, for convergence checks.
    """
    if loc.shape != scale.shape or loc.dim() != 2 or y.shape != loc.shape[:1]:
        raise ValueError(f"loc {tuple(loc.shape)}, scale {tuple(scale.shape)} must be (N, D) and y (N,); "
                         f"got y {tuple(y.shape)}.")
    if (y < 0).any():
        raise ValueError("y has unknown labels (< 0); pass the labelled patients only.")
    if not 0 < float(likelihood_power) <= 1:
        raise ValueError(f"likelihood_power={likelihood_power} must be in (0, 1].")
    if patient_weight is not None:
        if patient_weight.shape != y.shape or bool((patient_weight < 0).any()):
            raise ValueError(f"patient_weight must be a non-negative (N,) = {tuple(y.shape)} tensor; got shape "
                             f"{tuple(patient_weight.shape)}.")
        patient_weight = patient_weight.detach().to(dtype=loc.dtype, device=loc.device)
    q = head.posterior_q
    params = [p for p in q.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    loc, scale = loc.detach(), scale.detach()
    n = max(int(y.numel()), 1)
    trace = []
    for _ in range(int(steps)):
        opt.zero_grad()
        dq = q.distribution()
        eps_t = torch.randn((int(num_particles), q.size), dtype=loc.dtype, device=loc.device, generator=generator)
        theta = _rsample(q, dq, eps_t, generator)
        if z_sampler is None:
            eps_z = torch.randn((int(num_particles), *loc.shape), dtype=loc.dtype, device=loc.device,
                                generator=generator)
            z = loc + scale * eps_z
        else:
            z = z_sampler(int(num_particles))
        ll = head.log_likelihood(z, {"y": y}, {"theta": theta})              # (K, N)
        ll = (ll if patient_weight is None else ll * patient_weight).sum(-1)  # (K,)
        obj = (head.prior().log_prob(theta) + float(likelihood_power) * ll).mean() + dq.entropy()
        loss = -obj / n
        loss.backward()
        opt.step()
        trace.append(loss.detach())
    return torch.stack(trace).tolist() if trace else []   # one host sync, after the loop


def _rsample(q, dq, eps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised draws from the guide with explicit noise eps (K, P)."""
    if q.family == "meanfield":
        return q.loc + q.scale_diag() * eps
    if q.family == "fullrank":
        return q.loc + eps @ q.scale_tril().T
    # low-rank: theta = loc + F e1 + s * e2 with independent noise
    k = q.cov_factor.shape[1]
    e1 = torch.randn((eps.shape[0], k), dtype=eps.dtype, device=eps.device, generator=generator)
    return q.loc + e1 @ q.cov_factor.T + q.scale_diag() * eps


def refit_module_heads(module, store, steps: int = 600, lr: float = 0.02, num_particles: int = 8,
                       modality_dropout: float = 0.0) -> dict[str, list[float]]:
    """:func:`refit_head_posterior` for every Bayesian categorical head of a fitted module.

    ``store``: the training :class:`TensorStore`; the latent guide of its labelled patients
    (all modalities they have) is held fixed. Returns the loss trace per head.

    ``modality_dropout`` p > 0: the target is the head-weight optimum of the *sub-sampled* ELBO
    the module was trained with (MVAE objective, docs/model.md): every particle of every step
    hides each present modality with probability p (keeping one,
    :meth:`FusionModule.random_modality_mask`) and draws ``z ~ q(z | x_subset)``, the product of
    the remaining experts and the prior. p = 0 (default): ``z ~ q(z | x_all)``.
    """
    if not 0 <= float(modality_dropout) < 1:
        raise ValueError(f"modality_dropout={modality_dropout} must be in [0, 1).")
    from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule  # noqa: PLC0415

    heads = {k: h for k, h in module.heads.items() if isinstance(h, BayesianCategoricalHeadModule)}
    out: dict[str, list[float]] = {}
    if not heads:
        return out
    was_training = module.training
    module.eval()
    with torch.no_grad():
        batch = store.full()
        loc, scale, _ = module.posterior(batch)
        e_loc, e_scale = module.experts(batch)                       # (M, N, D)
    with torch.enable_grad():
        for name, head in heads.items():
            y = batch.targets[name]["y"]
            known = y >= 0
            sampler = None
            if modality_dropout > 0:
                sampler = _subset_sampler(module, e_loc[:, known], e_scale[:, known], batch.presence[:, known],
                                          float(modality_dropout))
            out[name] = refit_head_posterior(head, loc[known], scale[known], y[known], steps, lr, num_particles,
                                              z_sampler=sampler)
    module.train(was_training)
    return out


def _subset_sampler(module, e_loc: torch.Tensor, e_scale: torch.Tensor, presence: torch.Tensor, p: float):
    """``K -> z (K, N, D)``: per particle a fresh modality mask (M, N) and ``z ~ q(z | x_subset)``."""
    from bayesfuse.module.fusion import product_of_experts  # noqa: PLC0415

    M, N, D = e_loc.shape

    def sample(K: int) -> torch.Tensor:
        mask = module.random_modality_mask(presence.repeat(1, K), p)                   # (M, K N)
        zl, zs, _ = product_of_experts(e_loc.repeat(1, K, 1), e_scale.repeat(1, K, 1), presence.repeat(1, K) * mask)
        return (zl + zs * torch.randn_like(zl)).reshape(K, N, D)

    return sample
