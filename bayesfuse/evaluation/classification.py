"""Classification metrics of a Posterior against labels aligned by patient id."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import align_labels
from bayesfuse.exceptions import DataError
from bayesfuse.metrics.classification import ClassificationMetrics, classification_metrics
from bayesfuse.posterior.posterior import Posterior

__all__ = ["evaluate_classification", "aligned_labels"]


def aligned_labels(post: Posterior, labels: pd.Series, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``post`` with a known label and their class codes (aligned by patient id).

    ``labels`` is a Series indexed by patient id; NaN = unknown (left out). One alignment rule
    for the package: :func:`bayesfuse.calibration._common.align_labels`.
    """
    codes = align_labels(post, labels, head, allow_missing=True)
    rows = np.flatnonzero(codes >= 0)
    return rows, codes[rows]


def evaluate_classification(post: Posterior, labels: pd.Series, head: str, n_bins: int = 15
                            ) -> ClassificationMetrics:
    """Accuracy, macro-F1, NLL, Brier and top-label ECE (15 equal-width bins) of the
    posterior-mean probabilities of ``head`` on the patients whose label is known."""
    rows, y = aligned_labels(post, labels, head)
    if rows.size == 0:
        raise DataError(f"No known label for head {head!r} among these patients.")
    probs = post.probs(head).mean(axis=0)[rows].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return classification_metrics(probs, y, n_bins=n_bins)
