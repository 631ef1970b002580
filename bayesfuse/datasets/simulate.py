"""Simulate a multimodal cohort from the bayesfuse generative model family.

``z ~ N(0, I_D)``; each modality is a linear map of ``z`` pushed through its likelihood
(Gaussian, Bernoulli or negative-binomial counts); ``subtype`` and ``origin`` are
categorical with softmax-linear logits in ``z``; survival times are Weibull with a
``z``-dependent scale and independent exponential censoring. Modalities can be made
missing at random. The ground truth (``z``, true class probabilities, true survival
function, and for all-Gaussian cohorts the exact ``p(y | x)``) comes back alongside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesfuse.data.multimodal import MultiModalData

__all__ = ["simulate", "SimulationTruth", "DEFAULT_MODALITIES"]

_ROWS = 8192  # rows per block of simulated noise (bounds temporaries; the random stream is unchanged)

DEFAULT_MODALITIES: dict[str, tuple[str, int]] = {
    "expression": ("gaussian", 200),
    "methylation": ("gaussian", 100),
    "mutation": ("bernoulli", 50),
    "protein": ("gaussian", 40),
}


@dataclass
class SimulationTruth:
    """Ground truth of a simulated cohort (rows in ``sample_ids`` order).

    Attributes
    ----------
    z : ndarray (N, D)
        True latent of each patient.
    loadings : dict[str, tuple[ndarray (D, F), ndarray (F,)]]
        Linear map ``(W, b)`` of each modality.
    noise_scale : dict[str, float]
        Gaussian noise sd per Gaussian modality.
    class_probs : dict[str, ndarray (N, C)]
        ``p(y | z)`` per categorical target.
    classes : dict[str, list[str]]
    head_weights : dict[str, tuple[ndarray (D, C), ndarray (C,)]]
    weibull_shape : float
    weibull_log_scale : ndarray (N,)
        ``log lambda(z)`` of the survival time ``T ~ Weibull(shape k, scale lambda(z))``.
    event_time, censor_time : ndarray (N,)
    presence : DataFrame (N, M) bool
    """

    sample_ids: np.ndarray
    z: np.ndarray
    loadings: dict[str, tuple[np.ndarray, np.ndarray]]
    likelihoods: dict[str, str]
    noise_scale: dict[str, float]
    class_probs: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    head_weights: dict[str, tuple[np.ndarray, np.ndarray]]
    weibull_shape: float
    weibull_log_scale: np.ndarray
    event_time: np.ndarray
    censor_time: np.ndarray
    presence: pd.DataFrame
    extra: dict = field(default_factory=dict)

    def survival_function(self, times: np.ndarray) -> np.ndarray:
        """True ``S(t | z)`` for every patient, shape (N, len(times))."""
        t = np.asarray(times, dtype=float)[None, :]
        lam = np.exp(self.weibull_log_scale)[:, None]
        return np.exp(-((t / lam) ** self.weibull_shape))

    def exact_posterior(self, x: Mapping[str, np.ndarray] | None = None, presence: pd.DataFrame | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``p(z | x)`` = N(mean (N, D), cov (N, D, D)) for all-Gaussian cohorts.

        Uses the simulated observations stored in ``extra["x"]`` unless ``x`` is given;
        absent modalities (``presence`` False) are left out of the product.
        """
        if any(lk != "gaussian" for lk in self.likelihoods.values()):
            raise ValueError("exact_posterior needs every modality Gaussian (simulate with gaussian likelihoods).")
        x = x if x is not None else self.extra["x"]
        presence = presence if presence is not None else self.presence
        n, d = self.z.shape
        prec = np.broadcast_to(np.eye(d), (n, d, d)).copy()
        lin = np.zeros((n, d))
        for m, (w, b) in self.loadings.items():
            s2 = self.noise_scale[m] ** 2
            has = presence[m].to_numpy()
            xm = np.nan_to_num(x[m] - b)
            prec[has] += (w @ w.T) / s2
            lin[has] += (xm[has] @ w.T) / s2
        cov = np.linalg.inv(prec)
        mean = np.einsum("nij,nj->ni", cov, lin)
        return mean, cov

    def bayes_probs(self, head: str, num_samples: int = 4000, seed: int = 0) -> np.ndarray:
        """Bayes-optimal ``p(y | x)`` (N, C) by Monte Carlo over the exact Gaussian posterior."""
        mean, cov = self.exact_posterior()
        rng = np.random.default_rng(seed)
        chol = np.linalg.cholesky(cov)
        eps = rng.standard_normal((num_samples, *mean.shape))
        z = mean[None] + np.einsum("nij,snj->sni", chol, eps)
        w, b = self.head_weights[head]
        logits = z @ w + b
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
        return p.mean(0)


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def simulate(n_patients: int = 600, latent_dim: int = 4,
             modalities: Mapping[str, tuple[str, int]] | None = None, n_subtypes: int = 3, n_origins: int = 4,
             class_separation: float = 2.5, noise_scale: float = 1.0, signal_scale: float = 1.0,
             missing_rate: float | Mapping[str, float] = 0.0, weibull_shape: float = 1.5,
             survival_effect: float = 0.8, median_follow_up: float = 36.0, censoring_rate: float = 0.3,
             test_fraction: float = 0.25, seed: int = 0) -> tuple[MultiModalData, SimulationTruth]:
    """Draw a cohort from the bayesfuse model family.

    Parameters
    ----------
    n_patients : int
    latent_dim : int
        True latent dimension ``D``.
    modalities : dict[str, (likelihood, n_features)]
        ``likelihood`` in {"gaussian", "bernoulli", "negbinom"}; default
        :data:`DEFAULT_MODALITIES` (3 Gaussian + 1 Bernoulli).
    n_subtypes, n_origins : int
        Classes of the ``subtype`` and ``origin`` targets (0 = leave the target out).
    class_separation : float
        Scale of the softmax weights (larger = classes easier to tell apart).
    noise_scale : float
        Noise sd of Gaussian modalities.
    signal_scale : float
        Scale of the loadings.
    missing_rate : float or dict
        Probability that a patient lacks a modality (every patient keeps at least one).
    weibull_shape, survival_effect, median_follow_up, censoring_rate
        Survival: ``T ~ Weibull(k, lambda(z))``, ``log lambda = log(base) - effect * beta^T z``;
        independent exponential censoring tuned to roughly ``censoring_rate``.
    test_fraction : float
        Share of patients marked ``split = "test"`` (the rest ``"train"``).
    seed : int

    Returns
    -------
    data : MultiModalData
        Modalities plus targets ``subtype``, ``origin``, ``time``, ``event``, ``split``.
    truth : SimulationTruth
    """
    rng = np.random.default_rng(seed)
    mods = dict(modalities or DEFAULT_MODALITIES)
    n, d = int(n_patients), int(latent_dim)
    ids = np.array([f"sim-{i:05d}" for i in range(n)], dtype=object)
    z = rng.standard_normal((n, d))

    rates = {m: (missing_rate.get(m, 0.0) if isinstance(missing_rate, Mapping) else float(missing_rate)) for m in mods}
    pres = np.column_stack([rng.random(n) >= rates[m] for m in mods]) if mods else np.zeros((n, 0), bool)
    none = ~pres.any(axis=1)
    if none.any():  # keep at least one modality per patient
        pres[np.flatnonzero(none), rng.integers(0, len(mods), none.sum())] = True
    presence = pd.DataFrame(pres, index=pd.Index(ids, name="sample_id"), columns=list(mods))

    frames, loadings, xs, noise = {}, {}, {}, {}
    for j, (m, (lik, f)) in enumerate(mods.items()):
        w = rng.standard_normal((d, f)) * signal_scale / np.sqrt(d)
        if lik == "gaussian":
            b = rng.normal(0, 1, f)
            # x = z @ w + b + noise * eps, built in place with the noise drawn in row blocks
            # (same random stream and values as one draw, no full-size temporaries).
            x = z @ w
            x += b
            for s in range(0, n, _ROWS):
                eps = rng.standard_normal((min(_ROWS, n - s), f))
                eps *= noise_scale
                x[s:s + _ROWS] += eps
            noise[m] = float(noise_scale)
        elif lik == "bernoulli":
            b = rng.normal(-1.0, 0.5, f)
            x = np.empty((n, f))
            for s in range(0, n, _ROWS):
                u = rng.random((min(_ROWS, n - s), f))
                x[s:s + _ROWS] = u < 1 / (1 + np.exp(-(z[s:s + _ROWS] @ w + b)))
        elif lik == "negbinom":
            b = rng.normal(0, 1, f)
            share = _softmax(z @ w + b)
            lib = np.exp(rng.normal(np.log(20 * f), 0.3, n))[:, None]
            mu, theta = lib * share, 5.0
            x = rng.poisson(rng.gamma(theta, mu / theta)).astype(float)
        else:
            raise ValueError(f"Unknown likelihood {lik!r} for simulated modality {m!r}.")
        loadings[m] = (w, b)
        xs[m] = x
        cols = [f"{m[:4]}_{k:04d}" for k in range(f)]
        keep = pres[:, j]
        xk = x if keep.all() else x[keep]  # no copy when every patient has the modality
        frames[m] = pd.DataFrame(xk, index=pd.Index(ids[keep], name="sample_id"), columns=cols, copy=False)

    targets = pd.DataFrame(index=pd.Index(ids, name="sample_id"))
    class_probs, classes, head_w = {}, {}, {}
    for name, c in (("subtype", n_subtypes), ("origin", n_origins)):
        if c <= 0:
            continue
        w = rng.standard_normal((d, c)) * class_separation / np.sqrt(d)
        b = rng.normal(0, 0.3, c)
        p = _softmax(z @ w + b)
        labels = [f"{name[0].upper()}{k + 1}" for k in range(c)]
        y = np.array([labels[k] for k in (p.cumsum(1) > rng.random((n, 1))).argmax(1)], dtype=object)
        targets[name] = y
        class_probs[name], classes[name], head_w[name] = p, labels, (w, b)

    beta = rng.standard_normal(d)
    beta /= np.linalg.norm(beta)
    k = float(weibull_shape)
    base = median_follow_up / (np.log(2) ** (1 / k))
    log_lam = np.log(base) - survival_effect * (z @ beta)
    t_event = np.exp(log_lam) * rng.weibull(k, n)
    if censoring_rate > 0:
        # exponential censoring with a rate giving roughly the requested censored share
        cens_scale = np.median(t_event) * (1 - censoring_rate) / max(censoring_rate, 1e-6) * 1.4
        t_cens = rng.exponential(cens_scale, n)
    else:
        t_cens = np.full(n, np.inf)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    targets["time"] = time
    targets["event"] = event
    split = np.where(rng.random(n) < test_fraction, "test", "train")
    targets["split"] = split

    # The frames are the simulator's own (float64): no copy; they share memory with truth.extra["x"].
    data = MultiModalData(frames, targets=targets, name="simulated", copy=False)
    truth = SimulationTruth(sample_ids=ids, z=z, loadings=loadings, likelihoods={m: v[0] for m, v in mods.items()},
                            noise_scale=noise, class_probs=class_probs, classes=classes, head_weights=head_w,
                            weibull_shape=k, weibull_log_scale=log_lam, event_time=t_event, censor_time=t_cens,
                            presence=presence, extra={"x": xs, "beta": beta})
    return data, truth
