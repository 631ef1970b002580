"""Synthetic posteriors with a known survival law, for the survival calibration tests.

Truth: ``T ~ Exponential(h(x))`` with ``log h(x) = log(base) + effect * x``, ``x ~ N(0, 1)`` (stored
as the first latent coordinate). Censoring: ``C ~ Uniform(c_lo, c_hi)``, independent of ``(T, x)``
(``UniformCensoring`` is its exact ``G(t) = P(C >= t)``), or covariate-dependent.
The "posterior" carries the true log-hazard in every draw (plus small noise): a correct model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse.heads import Categorical, Survival
from bayesfuse.posterior import Posterior

CUTS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


@dataclass
class UniformCensoring:
    """True ``P(C >= t)`` of ``C ~ Uniform(lo, hi)`` (marginal)."""

    lo: float = 0.5
    hi: float = 6.0
    marginal = True

    def at_least(self, t, post=None):
        t = np.asarray(t, dtype=float)
        return np.clip((self.hi - t) / (self.hi - self.lo), 0.0, 1.0)


@dataclass
class CovariateCensoring:
    """True ``P(C >= t | x)`` of ``C ~ Exponential(rate * exp(slope * x))`` (x = first latent coordinate)."""

    rate: float = 0.25
    slope: float = 1.0
    marginal = False

    def at_least(self, t, post):
        x = np.asarray(post.latent_loc)[:, 0]
        return np.exp(-self.rate * np.exp(self.slope * x) * np.asarray(t, dtype=float))


@dataclass
class Cohort:
    post: Posterior
    targets: pd.DataFrame
    T: np.ndarray            # true event times
    x: np.ndarray


def cohort(n: int, seed: int, *, S: int = 8, effect: float = 1.5, base: float = 0.5, noise: float = 0.05,
           censoring="uniform", weibull_shape: float | None = None, cuts=CUTS, n_classes: int = 0,
           class_effect: float = 3.0, prefix: str = "p") -> Cohort:
    """Patients with true exponential survival; the posterior is the truth (or an over-confident Weibull).

    ``weibull_shape=k``: the posterior instead describes ``T' = m (T / m) ** (1 / k)`` (``m`` the true
    median): the same medians, log-time spread shrunk ``k``-fold (over-confident), as a
    piecewise-constant hazard on a fine grid. ``n_classes > 0`` adds a calibrated categorical head
    ``subtype`` whose logits depend on ``x``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    log_h = np.log(base) + effect * x
    T = rng.exponential(1.0 / np.exp(log_h))
    if censoring == "uniform":
        C = rng.uniform(UniformCensoring.lo, UniformCensoring.hi, n)
    elif censoring == "covariate":
        cm = CovariateCensoring()
        C = rng.exponential(1.0 / (cm.rate * np.exp(cm.slope * x)))
    else:
        C = np.full(n, np.inf)
    t_obs = np.minimum(T, C)
    event = (T <= C).astype(int)
    ids = np.array([f"{prefix}{i}" for i in range(n)], dtype=object)
    if weibull_shape is None:
        cuts_arr = np.asarray(cuts, dtype=float)
        lh = np.broadcast_to(log_h[None, :, None], (S, n, len(cuts_arr) + 1)).copy()
    else:
        # T' = m (T/m)^(1/k) with T ~ Exp(h): H'(t) = h m (t/m)^k, median m = log 2 / h
        k = float(weibull_shape)
        cuts_arr = np.geomspace(0.01, 20.0, 80)
        edges = np.concatenate([[0.0], cuts_arr, [cuts_arr[-1] * 1.5]])
        h = np.exp(log_h)[:, None]
        m = np.log(2) / h
        H = h * m * (edges[None, :] / m) ** k
        lh = np.broadcast_to(np.log(np.diff(H, axis=1) / np.diff(edges)[None, :])[None], (S, n, len(edges) - 1)).copy()
    lh += noise * rng.normal(size=(S, n, 1))
    heads = {"survival": Survival(cuts=list(cuts_arr))}
    draws = {"survival": {"log_hazard": lh}}
    targets = pd.DataFrame({"time": t_obs, "event": event}, index=ids)
    if n_classes:
        w = np.linspace(-1, 1, n_classes) * class_effect
        logits = x[:, None] * w[None, :]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
        classes = [f"c{j}" for j in range(n_classes)]
        heads["subtype"] = Categorical(column="subtype", classes=classes)
        draws["subtype"] = {"probs": np.broadcast_to(p[None], (S, n, n_classes)).copy()}
        targets["subtype"] = np.asarray(classes, dtype=object)[y]
    latent = np.zeros((S, n, 2))
    latent[:, :, 0] = x
    loc = np.zeros((n, 2))
    loc[:, 0] = x
    post = Posterior(sample_ids=ids, heads=heads, draws=draws, latent=latent, latent_loc=loc,
                     latent_scale=np.ones((n, 2)), presence=pd.DataFrame({"m": np.ones(n, bool)}, index=ids),
                     modality_precision=np.ones((n, 1, 2)))
    return Cohort(post, targets, T, x)
