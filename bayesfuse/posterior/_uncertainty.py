"""Entropy decomposition of per-draw class probabilities (numpy; the one implementation).

``total = H[mean_s p_s]`` (predictive entropy), ``aleatoric = mean_s H[p_s]`` (expected
entropy), ``epistemic = total - aleatoric`` (mutual information between the label and the
draw; BALD), all in nats. :meth:`bayesfuse.Posterior.uncertainty`,
:mod:`bayesfuse.metrics.classification` and :mod:`bayesfuse.calibration` use these.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

__all__ = ["entropy", "entropy_decomposition"]


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (``0 log 0 = 0``)."""
    return -xlogy(p, p).sum(axis=axis)


def entropy_decomposition(probs_draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(total, aleatoric, epistemic)`` per patient for draws shaped (S, n, C).

    ``epistemic`` is clipped at 0 to remove round-off, so total = aleatoric + epistemic up to it.
    """
    p = np.asarray(probs_draws, dtype=np.float64)
    total = entropy(p.mean(axis=0))
    aleatoric = entropy(p).mean(axis=0)
    return total, aleatoric, np.maximum(total - aleatoric, 0.0)
