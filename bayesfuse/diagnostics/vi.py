"""PSIS k-hat of the variational posterior of global (head) weights.

For draws ``theta_s ~ q`` the importance ratios ``log p(theta_s, y) - log q(theta_s)`` are
Pareto-smoothed (:func:`arviz.psislw`); the shape estimate ``k-hat`` says how far ``q`` is from
the target: ``k-hat < min(1 - 1/log10 S, 0.7)`` (Vehtari et al. 2024, "Pareto smoothed
importance sampling", JMLR) means importance sampling with S draws is reliable, and ``q`` is a
usable approximation; above it, ``q`` is too narrow or mis-shaped somewhere.

In a fitted :class:`bayesfuse.FusionModel`, the target for the head weights is the optimal
factor ``q*(theta) ∝ exp E_q(z|x)[log p(theta, y, z)]`` given the fitted latent guide (what
the Gaussian head guide approximates inside the ELBO), estimated with ``num_latent`` common
draws of ``z`` per patient (:func:`expected_log_joint`). For the stand-alone softmax sub-model
on fixed z, :func:`guide_khat` uses the exact log joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

__all__ = ["HeadKhat", "VIDiagnostics", "head_weight_diagnostics", "khat_threshold", "psis_khat"]


def khat_threshold(num_samples: int) -> float:
    """Sample-size dependent k-hat threshold ``min(1 - 1/log10(S), 0.7)`` (Vehtari et al. 2024)."""
    if num_samples < 11:
        raise ValueError(f"num_samples={num_samples}: PSIS needs more than 10 draws.")
    return float(min(1.0 - 1.0 / math.log10(num_samples), 0.7))


def psis_khat(log_ratios) -> float:
    """Pareto k-hat of importance log-ratios (S,) via :func:`arviz.psislw`."""
    import arviz as az

    lr = np.asarray(log_ratios, dtype=float).ravel()
    if not np.isfinite(lr).all():
        raise ValueError("log_ratios contain non-finite values; check the model and guide log densities.")
    _, k = az.psislw(lr - lr.max())
    return float(np.asarray(k).ravel()[0])


@dataclass
class HeadKhat:
    """k-hat of one head's weight guide."""

    head: str
    khat: float
    threshold: float
    num_samples: int
    guide: str
    n_weights: int

    @property
    def ok(self) -> bool:
        return self.khat < self.threshold


@dataclass
class VIDiagnostics:
    """Diagnostics summary set on ``FusionModel.diagnostics_`` after fitting a Bayesian model."""

    heads: list[HeadKhat] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.heads)

    def summary(self) -> pd.DataFrame:
        """One row per Bayesian head: head, guide, n_weights, khat, threshold, ok."""
        return pd.DataFrame([{"head": h.head, "guide": h.guide, "n_weights": h.n_weights, "khat": h.khat,
                              "threshold": h.threshold, "num_samples": h.num_samples, "ok": h.ok}
                             for h in self.heads])

    def __repr__(self) -> str:
        rows = "; ".join(f"{h.head}: k-hat {h.khat:.2f} ({'ok' if h.ok else 'HIGH'}, threshold {h.threshold:.2f})"
                         for h in self.heads)
        return f"VIDiagnostics({rows or 'no Bayesian head'})"


def guide_khat(head, z: torch.Tensor, y: torch.Tensor, num_samples: int = 2000, weight: float | None = None,
               shrink: float = 1.0) -> float:
    """k-hat of ``head.posterior_q`` for ``p(theta | y, z)`` at fixed z (N, D), y (N,).

    ``shrink`` divides the guide's deviations from its mean (a negative control: ``shrink=3``
    under-disperses the guide 3x).
    """
    with torch.no_grad():
        q = head.posterior_q.distribution()
        theta = q.sample((int(num_samples),))
        if shrink != 1.0:
            loc = head.posterior_q.loc
            theta = loc + (theta - loc) / shrink
            logq = q.log_prob(loc + (theta - loc) * shrink) + theta.shape[-1] * math.log(shrink)
        else:
            logq = q.log_prob(theta)
        logp = head.log_joint(z, y, theta, weight=weight)
    return psis_khat((logp - logq).double().cpu().numpy())


def expected_log_joint(head, z_draws: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, chunk: int = 250
                       ) -> torch.Tensor:
    """``log p(theta) + sum_n mean_l log p(y_n | z_ln, theta)`` for theta (S, P), z_draws (L, N, D) -> (S,).

    With ``z`` draws from the fitted guide ``q(z | x)``, this is (up to a constant) the log of the
    optimal Gaussian-free factor ``q*(theta) ∝ exp E_q(z)[log p(theta, y, z)]`` that the head-weight
    guide approximates in the ELBO (coordinate-ascent VI). The head's ELBO weight ``w`` multiplies
    both the likelihood and theta's prior/guide sites (FusionModule.model), so it cancels here.
    """
    out = []
    for i in range(0, theta.shape[0], chunk):
        th = theta[i:i + chunk]
        ll = torch.stack([head.log_likelihood(z, {"y": y}, {"theta": th}) for z in z_draws])  # (L, s, N)
        out.append(head.prior().log_prob(th) + ll.mean(0).sum(-1))
    return torch.cat(out)


def head_weight_diagnostics(module, store, num_samples: int = 2000, num_latent: int = 16) -> VIDiagnostics:
    """k-hat of every Bayesian head of a fitted module on its training store (see module docstring)."""
    from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule  # noqa: PLC0415

    out = VIDiagnostics()
    heads = {k: h for k, h in module.heads.items() if isinstance(h, BayesianCategoricalHeadModule)}
    if not heads:
        return out
    module.eval()
    with torch.no_grad():
        batch = store.full()
        loc, scale, _ = module.posterior(batch)
        z_draws = loc + scale * torch.randn((int(num_latent), *loc.shape), dtype=loc.dtype, device=loc.device)
        for name, head in heads.items():
            y = batch.targets[name]["y"]
            known = y >= 0
            q = head.posterior_q.distribution()
            theta = q.sample((int(num_samples),))
            logr = expected_log_joint(head, z_draws[:, known], y[known], theta) - q.log_prob(theta)
            k = psis_khat(logr.double().cpu().numpy())
        out.heads.append(HeadKhat(name, k, khat_threshold(num_samples), int(num_samples), head.posterior_q.family,
                                  head.n_params))
    return out
