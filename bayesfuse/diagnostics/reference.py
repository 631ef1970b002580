"""NUTS reference for the heads: Bayesian softmax regression of labels on fixed latent means.

The sub-model (linear categorical head, ``theta = [vec(W) (D*C, row-major (in, out)), b (C)]``)::

    theta ~ N(0, prior_scale^2 I)
    y_n | z_n, theta ~ Categorical(softmax(z_n W + b))        (likelihood raised to ``weight``)

is written twice: in Pyro through the package's own head (:class:`BayesianCategoricalHeadModule`,
its ``model_params`` hook and log-likelihood: :func:`pyro_log_joint`), and once, independently,
in NumPyro (:func:`numpyro_model`, sampled by NUTS in :func:`run_nuts`). The two log joints
agree at fixed parameters (tested), so the SVI guide fitted by :func:`fit_svi_submodel` can be
compared with the NUTS posterior by :func:`compare_posteriors`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

__all__ = ["pyro_log_joint", "numpyro_model", "numpyro_log_joint", "fit_svi_submodel", "run_nuts",
           "NutsResult", "PosteriorComparison", "compare_posteriors", "softmax_predictive", "sbc_ranks",
           "plot_sbc_ecdf"]


# ----------------------------------------------------------------------------- Pyro
def _pyro_submodel(head, z: torch.Tensor, y: torch.Tensor, weight: float = 1.0) -> None:
    params = head.model_params("head")
    ll = head.log_likelihood(z, {"y": y}, params)
    pyro.factor("y", weight * ll.sum(-1))


def pyro_log_joint(head, z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, weight: float = 1.0) -> float:
    """Log joint ``log p(theta) + weight * log p(y | z, theta)`` of the Pyro sub-model (a trace's log_prob_sum)."""
    cond = poutine.condition(_pyro_submodel, data={"head_weights": theta})
    tr = poutine.trace(cond).get_trace(head, z, y, weight)
    return float(tr.log_prob_sum())


def fit_svi_submodel(z, y, n_classes: int, guide: str = "lowrank", rank: int = 4, prior_scale: float = 1.0,
                     weight: float = 1.0, steps: int = 3000, lr: float = 0.02, num_particles: int = 4,
                     seed: int = 0):
    """Fit the head's variational posterior on fixed ``z`` (N, D), ``y`` (N,) by SVI (float64).

    Returns the fitted :class:`BayesianCategoricalHeadModule` (its ``posterior_q`` is the guide).
    """
    from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule  # noqa: PLC0415

    torch.manual_seed(seed)
    z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    head = BayesianCategoricalHeadModule(z.shape[-1], n_classes, prior_scale=prior_scale, guide=guide,
                                         rank=rank).double()
    with torch.no_grad():
        head.posterior_q.loc.zero_()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.02)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=False)

    def guide_fn(head, z, y, weight):
        head.guide_params("head")

    with pyro.validation_enabled(False):
        for _ in range(int(steps)):
            loss = elbo.differentiable_loss(_pyro_submodel, guide_fn, head, z, y, weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head


# -------------------------------------------------------------------------- NumPyro
def numpyro_model(z, y=None, n_classes: int = 2, prior_scale: float = 1.0, weight: float = 1.0):
    """The same sub-model written in NumPyro (z (N, D) jax array; y (N,) ints or None)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    D, C = z.shape[-1], int(n_classes)
    theta = numpyro.sample("theta", nd.Normal(0.0, prior_scale).expand([D * C + C]).to_event(1))
    W = theta[: D * C].reshape(D, C)
    b = theta[D * C:]
    logits = z @ W + b
    if y is not None:
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), y[:, None], axis=-1)[:, 0]
        numpyro.factor("y", weight * logp.sum())
    return logits


def numpyro_log_joint(z, y, theta, n_classes: int, prior_scale: float = 1.0, weight: float = 1.0) -> float:
    """Log joint of :func:`numpyro_model` at ``theta`` (P,), in float64."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    jax.config.update("jax_enable_x64", True)
    lj, _ = log_density(numpyro_model, (jnp.asarray(np.asarray(z), dtype=jnp.float64),
                                        jnp.asarray(np.asarray(y))),
                        {"n_classes": n_classes, "prior_scale": prior_scale, "weight": weight},
                        {"theta": jnp.asarray(np.asarray(theta), dtype=jnp.float64)})
    return float(lj)


@dataclass
class NutsResult:
    """NUTS draws (chains, draws, P) and their convergence summary."""

    samples: np.ndarray
    rhat_max: float
    ess_bulk_min: float
    seconds: float

    @property
    def flat(self) -> np.ndarray:
        return self.samples.reshape(-1, self.samples.shape[-1])


def run_nuts(z, y, n_classes: int, prior_scale: float = 1.0, weight: float = 1.0, num_warmup: int = 500,
             num_samples: int = 500, num_chains: int = 4, seed: int = 0) -> NutsResult:
    """NUTS on :func:`numpyro_model` (chains run sequentially on the CPU); r-hat and ESS by arviz."""
    import time

    import arviz as az
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(numpyro_model), num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), jnp.asarray(np.asarray(z), dtype=jnp.float64), jnp.asarray(np.asarray(y)),
             n_classes=n_classes, prior_scale=prior_scale, weight=weight)
    s = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"])
    idata = az.from_dict(posterior={"theta": s})
    rhat = float(np.asarray(az.rhat(idata)["theta"]).max())
    ess = float(np.asarray(az.ess(idata, method="bulk")["theta"]).min())
    return NutsResult(s, rhat, ess, time.perf_counter() - t0)


# ------------------------------------------------------------------------ comparison
@dataclass
class PosteriorComparison:
    """SVI vs reference posterior, per weight coordinate summarised.

    ``mean_shift``: |mean_q - mean_ref| / sd_ref; ``sd_ratio``: sd_q / sd_ref.
    """

    max_mean_shift: float
    median_mean_shift: float
    min_sd_ratio: float
    max_sd_ratio: float
    median_sd_ratio: float
    mean_tol: float = 0.5
    sd_range: tuple[float, float] = (0.7, 1.3)

    @property
    def passed(self) -> bool:
        return (self.max_mean_shift <= self.mean_tol and self.sd_range[0] <= self.min_sd_ratio
                and self.max_sd_ratio <= self.sd_range[1])


def compare_posteriors(draws, reference, mean_tol: float = 0.5, sd_range: tuple[float, float] = (0.7, 1.3)
                       ) -> PosteriorComparison:
    """Compare approximate ``draws`` (S, P) with ``reference`` draws (K, P) coordinate by coordinate."""
    a, r = np.asarray(draws, float), np.asarray(reference, float)
    if a.ndim != 2 or r.ndim != 2 or a.shape[1] != r.shape[1]:
        raise ValueError(f"draws {a.shape} and reference {r.shape} must both be (n_draws, P) with the same P.")
    sd_r = r.std(0, ddof=1)
    shift = np.abs(a.mean(0) - r.mean(0)) / sd_r
    ratio = a.std(0, ddof=1) / sd_r
    return PosteriorComparison(float(shift.max()), float(np.median(shift)), float(ratio.min()), float(ratio.max()),
                               float(np.median(ratio)), mean_tol, tuple(sd_range))


def softmax_predictive(z, theta_draws, n_classes: int) -> np.ndarray:
    """Posterior-predictive class probabilities (N, C) of the linear head averaged over theta draws (S, P)."""
    z = np.asarray(z, float)
    th = np.asarray(theta_draws, float)
    D = z.shape[-1]
    W = th[:, : D * n_classes].reshape(-1, D, n_classes)
    b = th[:, D * n_classes:]
    logits = np.einsum("nd,sdc->snc", z, W) + b[:, None, :]
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return p.mean(0)


# ------------------------------------------------------------------------------- SBC
def sbc_ranks(n_replicates: int = 100, n_patients: int = 60, latent_dim: int = 2, n_classes: int = 3,
              guide: str = "fullrank", num_draws: int = 99, steps: int = 400, prior_scale: float = 1.0,
              seed: int = 0) -> np.ndarray:
    """Simulation-based calibration (Talts et al. 2018) of the SVI head guide on the sub-model.

    Each replicate draws ``theta*`` from the prior, labels ``y`` from the model at fixed random
    ``z`` (n_patients, latent_dim), fits the guide by :func:`fit_svi_submodel` and records the
    rank of ``theta*`` among ``num_draws`` guide draws, per coordinate. A calibrated posterior
    gives uniform ranks on ``0..num_draws``.

    Returns
    -------
    numpy.ndarray of int, shape (n_replicates, P)
    """
    rs = np.random.RandomState(seed)
    P = latent_dim * n_classes + n_classes
    ranks = np.zeros((n_replicates, P), dtype=int)
    for r in range(n_replicates):
        z = rs.randn(n_patients, latent_dim)
        theta = rs.randn(P) * prior_scale
        logits = z @ theta[: latent_dim * n_classes].reshape(latent_dim, n_classes) + theta[latent_dim * n_classes:]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = np.array([rs.choice(n_classes, p=pi) for pi in p])
        head = fit_svi_submodel(z, y, n_classes, guide=guide, prior_scale=prior_scale, steps=steps, lr=0.05,
                                num_particles=2, seed=seed * 100003 + r)
        with torch.no_grad():
            draws = head.posterior_q.distribution().sample((num_draws,)).numpy()
        ranks[r] = (draws < theta).sum(0)
    return ranks


def plot_sbc_ecdf(ranks, num_draws: int = 99, ax=None):
    """ECDF-difference plot of SBC ranks with simultaneous PIT bands (:func:`arviz.plot_ecdf`). Returns ax."""
    import arviz as az
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    u = (np.asarray(ranks).ravel() + 0.5) / (num_draws + 1)
    from scipy import stats

    az.plot_ecdf(u, cdf=stats.uniform().cdf, difference=True, confidence_bands=True, ax=ax)
    ax.set_xlabel("fractional rank of the true weight")
    return ax
