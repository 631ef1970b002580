"""Classification metrics of a Posterior against labels aligned by patient id."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesfuse.exceptions import DataError
from bayesfuse.metrics.classification import ClassificationMetrics, classification_metrics, encode_labels
from bayesfuse.posterior.posterior import Posterior

__all__ = ["evaluate_classification", "aligned_labels"]


def aligned_labels(post: Posterior, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``post`` with a known label, and those labels (aligned by patient id).

    ``labels`` is a Series indexed by patient id; NaN = unknown (left out).
    """
    if not isinstance(labels, pd.Series):
        raise DataError("labels must be a pandas Series indexed by patient id (e.g. data.targets['subtype']).")
    idx = pd.Index(labels.index.map(str))
    ids = pd.Index([str(s) for s in post.sample_ids])
    missing = ids.difference(idx)
    if len(missing):
        raise DataError(f"{len(missing)} patient(s) of the posterior have no entry in labels "
                        f"(e.g. {missing[:3].tolist()}); pass labels for the same patients.")
    lab = pd.Series(labels.to_numpy(), index=idx).reindex(ids)
    known = lab.notna().to_numpy()
    return np.flatnonzero(known), lab.to_numpy()[known]


def evaluate_classification(post: Posterior, labels: pd.Series, head: str, n_bins: int = 15
                            ) -> ClassificationMetrics:
    """Accuracy, macro-F1, NLL, Brier and top-label ECE (15 equal-width bins) of the
    posterior-mean probabilities of ``head`` on the patients whose label is known."""
    rows, lab = aligned_labels(post, labels)
    if rows.size == 0:
        raise DataError(f"No known label for head {head!r} among these patients.")
    y = encode_labels(lab, post.classes(head))
    probs = post.probs(head).mean(axis=0)[rows].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return classification_metrics(probs, y, n_bins=n_bins)
