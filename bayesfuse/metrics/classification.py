"""Classification metrics on predictive class probabilities.

Conventions: ``probs`` is an array shaped (n, C) of predictive class probabilities (rows sum
to 1) and ``y`` holds integer class codes shaped (n,) in ``0..C-1`` (see :func:`encode_labels`).
Per-draw probabilities are shaped (S, n, C). Logarithms are natural (nats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from bayesfuse._labels import label_codes
from bayesfuse.exceptions import DataError
from bayesfuse.metrics._validation import (
    as_float_array,
    check_binary,
    check_labels,
    check_prob_draws,
    check_probs,
    check_same_length,
)
from bayesfuse.posterior._uncertainty import entropy_decomposition

__all__ = [
    "ClassificationMetrics",
    "ECEConsistency",
    "RiskCoverage",
    "accuracy",
    "aurc",
    "brier",
    "classification_metrics",
    "classwise_ece",
    "ece",
    "ece_consistency",
    "encode_labels",
    "expected_entropy",
    "macro_f1",
    "mutual_information",
    "nll",
    "predictive_entropy",
    "risk_coverage_curve",
]

NLL_CLIP = 1e-12


def encode_labels(labels: Sequence, classes: Sequence) -> np.ndarray:
    """Map labels to integer codes given the ordered class list.

    Parameters
    ----------
    labels : array-like, shape (n,)
        Class labels (strings, ints, ...).
    classes : sequence, length C
        Class names in the column order of ``probs``; must be unique.

    Returns
    -------
    np.ndarray of int64, shape (n,)
        ``codes[i] == classes.index(labels[i])``, labels and classes compared by their text
        (:func:`bayesfuse._labels.label_codes`: ``1``, ``1.0`` and ``"1"`` all match the class ``"1"``).

    Raises
    ------
    DataError
        If ``classes`` has duplicates or some labels are not in ``classes`` (they are named).
    """
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise DataError(f"classes has duplicates ({classes}); pass each class once, in column order.")
    labels = np.asarray(labels, dtype=object).ravel()
    codes = label_codes(labels, classes)
    if (codes < 0).any():
        unknown = sorted({repr(lab) for lab, c in zip(labels, codes) if c < 0})
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise DataError(f"{len(unknown)} unknown label(s) not in classes {classes} (missing labels count too): {shown}. "
                        "Fix the spelling, add them to classes, or drop those patients.")
    return codes


def _probs_y(probs, y) -> tuple[np.ndarray, np.ndarray]:
    p = check_probs(probs)
    return p, check_labels(y, p.shape[1], p.shape[0])


def accuracy(probs, y) -> float:
    """Share of patients whose most probable class is the true one (``sklearn.metrics.accuracy_score``).

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    """
    p, y = _probs_y(probs, y)
    return float(accuracy_score(y, p.argmax(axis=1)))


def macro_f1(probs, y) -> float:
    """Unweighted mean over the C classes of the F1 score of the argmax prediction.

    Library-backed: ``sklearn.metrics.f1_score(average="macro", labels=range(C), zero_division=0)``,
    so a class never predicted nor present counts as F1 = 0.

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    """
    p, y = _probs_y(probs, y)
    return float(f1_score(y, p.argmax(axis=1), labels=np.arange(p.shape[1]), average="macro",
                          zero_division=0))


def nll(probs, y) -> float:
    """Mean negative log-likelihood ``-mean_i log p_i[y_i]`` with ``p`` clipped at 1e-12.

    Hand-written; checked against ``sklearn.metrics.log_loss`` (tests/test_metrics_classification.py).

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    """
    p, y = _probs_y(probs, y)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], NLL_CLIP, 1.0))))


def brier(probs, y) -> float:
    """Multiclass Brier score: ``mean_i sum_c (p_ic - 1[y_i = c])^2`` (range 0..2).

    Hand-written; checked against ``sklearn.metrics.brier_score_loss(..., scale_by_half=False)``.

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    """
    p, y = _probs_y(probs, y)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _bin_ids(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin index per sample, same edges and closure as ``sklearn.calibration.calibration_curve``.

    Bins are right-closed ``(a, b]`` (the first one also holds its left edge).
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise DataError(f"n_bins must be a positive integer, got {n_bins!r}.")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(conf, np.linspace(0.0, 1.0, n_bins + 1) * 100)  # sklearn's exact expression
    else:
        raise DataError(f"strategy must be 'uniform' (equal-width bins) or 'quantile' (equal-mass bins), "
                        f"got {strategy!r}.")
    return np.searchsorted(edges[1:-1], conf)


def _binary_ece(conf: np.ndarray, hit: np.ndarray, n_bins: int, strategy: str) -> float:
    ids = _bin_ids(conf, n_bins, strategy)
    conf_sum = np.bincount(ids, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(ids, weights=hit.astype(np.float64), minlength=n_bins)
    # sum_b (n_b / n) |acc_b - conf_b| = sum_b |hit_sum_b - conf_sum_b| / n
    return float(np.sum(np.abs(hit_sum - conf_sum)) / conf.shape[0])


def ece(probs, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label expected calibration error.

    ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` where ``conf_i = max_c p_ic``, ``acc_b`` is the share of
    correct argmax predictions in bin ``b`` and ``conf_b`` the mean confidence there (Guo et al. 2017).

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    n_bins : int, default 15
        Number of bins. The default of 15 equal-width bins follows Guo et al. (2017).
    strategy : {"uniform", "quantile"}, default "uniform"
        ``"uniform"``: equal-width bins on [0, 1]; ``"quantile"``: equal-mass bins (edges at the
        quantiles of the confidences). Bins are right-closed, exactly as in
        ``sklearn.calibration.calibration_curve``.

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Hand-written; checked against per-bin accuracies/confidences from
    ``sklearn.calibration.calibration_curve`` weighted by ``pandas.cut`` bin counts.
    """
    p, y = _probs_y(probs, y)
    conf = p.max(axis=1)
    hit = p.argmax(axis=1) == y
    return _binary_ece(conf, hit, n_bins, strategy)


@dataclass(frozen=True)
class ECEConsistency:
    """Top-label ECE beside its sampling distribution under perfect calibration.

    Attributes
    ----------
    ece : float
        Observed top-label ECE (as :func:`ece`).
    null_mean : float
        Mean ECE of the same probabilities when labels are drawn from them (a perfectly calibrated
        model on a test set of this size): the binning estimator's noise floor.
    null_quantiles : tuple of float
        5% and 95% quantiles of that null distribution.
    p_value : float
        Share of null ECEs >= the observed one (add-one corrected): small = miscalibrated beyond
        what the sample size explains.
    n_resamples : int
    """

    ece: float
    null_mean: float
    null_quantiles: tuple[float, float]
    p_value: float
    n_resamples: int


def ece_consistency(probs, y, n_bins: int = 15, strategy: str = "uniform", n_resamples: int = 2000,
                    seed: int = 0) -> ECEConsistency:
    """Consistency-resampling test of top-label calibration (Broecker & Smith 2007).

    A test set of ``n`` patients gives a positive ECE even for a perfectly calibrated model (with
    112 patients at 95% mean confidence the expected ECE is ~0.05). This draws ``n_resamples``
    label vectors from ``probs`` itself, recomputes the ECE with the same bins, and reports where the
    observed ECE falls (Vaicenavicius et al. 2019 use the same reference distribution).

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    n_bins, strategy
        As in :func:`ece` (bins depend only on the confidences, so they are shared by all resamples).
    n_resamples : int, default 2000
    seed : int, default 0

    Returns
    -------
    ECEConsistency

    Notes
    -----
    Vectorised over resamples; each resample's ECE equals :func:`ece` on the drawn labels (tested).
    """
    p, y = _probs_y(probs, y)
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}.")
    observed = ece(p, y, n_bins=n_bins, strategy=strategy)
    null = _null_ece_draws(p, n_bins, strategy, int(n_resamples), np.random.default_rng(seed))
    q05, q95 = np.quantile(null, [0.05, 0.95])
    p_value = (1.0 + np.sum(null >= observed - 1e-12)) / (1.0 + null.size)
    return ECEConsistency(ece=observed, null_mean=float(null.mean()), null_quantiles=(float(q05), float(q95)),
                          p_value=float(p_value), n_resamples=int(n_resamples))


def _null_ece_draws(p: np.ndarray, n_bins: int, strategy: str, n_resamples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """ECE of ``p`` against labels drawn from ``p``: (n_resamples,)."""
    n = p.shape[0]
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    ids = _bin_ids(conf, n_bins, strategy)                             # (n,)
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)          # (n, C)
    u = rng.random((n_resamples, n))                                   # (R, n)
    y_draw = (u[..., None] > cum[None, :, :-1]).sum(axis=-1)           # (R, n) inverse-CDF draws
    hit = (y_draw == pred[None, :]).astype(np.float64)                 # (R, n)
    onehot = np.eye(n_bins)[ids]                                       # (n, B)
    hit_sum = hit @ onehot                                             # (R, B)
    conf_sum = conf @ onehot                                           # (B,)
    return np.abs(hit_sum - conf_sum[None, :]).sum(axis=1) / n


def classwise_ece(probs, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Class-wise ECE (Kull et al. 2019): mean over classes of the ECE of ``p[:, c]`` vs ``1[y = c]``.

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    n_bins, strategy
        As in :func:`ece`.

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Hand-written; checked against ``sklearn.calibration.calibration_curve`` per class.
    """
    p, y = _probs_y(probs, y)
    return float(np.mean([_binary_ece(p[:, c], y == c, n_bins, strategy) for c in range(p.shape[1])]))


@dataclass(frozen=True)
class RiskCoverage:
    """Risk-coverage curve of selective prediction.

    Attributes
    ----------
    coverage : np.ndarray, shape (K,)
        Share of patients kept when keeping those with ``confidence >= threshold``; increasing.
    risk : np.ndarray, shape (K,)
        Error rate among the kept patients (selective risk).
    threshold : np.ndarray, shape (K,)
        Distinct confidence values, decreasing; patients with tied confidence enter together.
    """

    coverage: np.ndarray
    risk: np.ndarray
    threshold: np.ndarray

    def to_frame(self):
        """Return the curve as a ``pandas.DataFrame`` with columns coverage, risk, threshold."""
        import pandas as pd

        return pd.DataFrame({"coverage": self.coverage, "risk": self.risk, "threshold": self.threshold})


def _check_conf_correct(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    c = as_float_array(confidence, "confidence", 1)
    k = check_binary(correct, "correct")
    check_same_length(confidence=c, correct=k)
    return c, k


def risk_coverage_curve(confidence, correct) -> RiskCoverage:
    """Selective risk as a function of coverage, keeping the most confident patients first.

    Parameters
    ----------
    confidence : array, shape (n,)
        Higher = more confident (e.g. max class probability, or minus the entropy).
    correct : array of bool, shape (n,)
        Whether each prediction is right.

    Returns
    -------
    RiskCoverage
        One point per distinct confidence value: patients with tied confidence cannot be separated by
        a threshold, so they enter the kept set together (the curve does not depend on their order).
    """
    c, k = _check_conf_correct(confidence, correct)
    order = np.argsort(-c, kind="mergesort")
    c_sorted, err_sorted = c[order], (~k[order]).astype(np.float64)
    # last index of each block of tied confidences
    last = np.r_[np.flatnonzero(np.diff(c_sorted) != 0), c.shape[0] - 1]
    kept = last + 1
    cum_err = np.cumsum(err_sorted)[last]
    return RiskCoverage(coverage=kept / c.shape[0], risk=cum_err / kept, threshold=c_sorted[last])


def aurc(confidence, correct) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019), lower is better.

    ``AURC = (1/n) sum_{k=1..n} risk(top-k most confident)``; with tied confidences all members of a tie
    block get the risk of the whole block (step integral of :func:`risk_coverage_curve` over coverage),
    so the value does not depend on the order of ties.

    Parameters
    ----------
    confidence : array, shape (n,)
    correct : array of bool, shape (n,)

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Hand-written; checked against a literal implementation of Geifman et al.'s definition (mean over
    k of the error rate of the k most confident patients) on tie-free inputs.
    """
    rc = risk_coverage_curve(confidence, correct)
    d_cov = np.diff(np.r_[0.0, rc.coverage])
    return float(np.sum(d_cov * rc.risk))


@dataclass(frozen=True)
class ClassificationMetrics:
    """Summary of classification performance (see the functions of the same names)."""

    accuracy: float
    macro_f1: float
    nll: float
    brier: float
    ece: float
    n: int


def classification_metrics(probs, y, n_bins: int = 15) -> ClassificationMetrics:
    """Accuracy, macro-F1, NLL, Brier and top-label ECE (``n_bins`` equal-width bins) in one record.

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    n_bins : int, default 15
    """
    p, y = _probs_y(probs, y)
    return ClassificationMetrics(accuracy=accuracy(p, y), macro_f1=macro_f1(p, y), nll=nll(p, y),
                                 brier=brier(p, y), ece=ece(p, y, n_bins=n_bins), n=int(p.shape[0]))


def predictive_entropy(probs_draws) -> np.ndarray:
    """Total uncertainty ``H[mean_s p_s]`` per patient, in nats.

    Parameters
    ----------
    probs_draws : array, shape (S, n, C)

    Returns
    -------
    np.ndarray, shape (n,)
    """
    return entropy_decomposition(check_prob_draws(probs_draws))[0]


def expected_entropy(probs_draws) -> np.ndarray:
    """Aleatoric uncertainty ``mean_s H[p_s]`` per patient, in nats.

    Parameters
    ----------
    probs_draws : array, shape (S, n, C)

    Returns
    -------
    np.ndarray, shape (n,)
    """
    return entropy_decomposition(check_prob_draws(probs_draws))[1]


def mutual_information(probs_draws) -> np.ndarray:
    """Epistemic uncertainty (BALD): ``I = H[mean_s p_s] - mean_s H[p_s]`` per patient, in nats, >= 0.

    Parameters
    ----------
    probs_draws : array, shape (S, n, C)

    Returns
    -------
    np.ndarray, shape (n,)
        Clipped at 0 to remove round-off; total = aleatoric + epistemic holds by construction.
    """
    return entropy_decomposition(check_prob_draws(probs_draws))[2]
