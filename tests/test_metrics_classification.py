"""Tests of bayesfuse.metrics.classification (and .imputation): library oracles, identities, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy, pearsonr
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss

import bayesfuse.metrics as bf_metrics
from bayesfuse.exceptions import DataError
from bayesfuse.metrics import (
    ClassificationMetrics,
    accuracy,
    aurc,
    brier,
    classification_metrics,
    classwise_ece,
    ece,
    encode_labels,
    expected_entropy,
    imputation_metrics,
    macro_f1,
    mutual_information,
    nll,
    predictive_entropy,
    risk_coverage_curve,
)

TOL = 1e-12


def make_probs(n=400, C=4, seed=0, temp=1.0):
    """Labels drawn from a softmax model, then probabilities tempered (temp != 1: miscalibrated)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, C))
    p_true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(C, p=row) for row in p_true])
    z = logits / temp
    return np.exp(z) / np.exp(z).sum(1, keepdims=True), y


def ece_oracle(conf, hit, n_bins, strategy):
    """ECE from sklearn.calibration.calibration_curve, bin weights from pandas.cut (right-closed bins)."""
    prob_true, prob_pred = calibration_curve(hit.astype(int), conf, n_bins=n_bins, strategy=strategy)
    edges = (np.linspace(0, 1, n_bins + 1) if strategy == "uniform"
             else np.percentile(conf, np.linspace(0, 1, n_bins + 1) * 100))
    counts = pd.Series(pd.cut(conf, edges, include_lowest=True)).value_counts(sort=False).to_numpy()
    counts = counts[counts > 0]
    return float(np.sum(counts / len(conf) * np.abs(prob_true - prob_pred)))


# ------------------------------------------------------------------------------ point metrics
def test_encode_labels():
    np.testing.assert_array_equal(encode_labels(["b", "a", "c", "a"], ["a", "b", "c"]), [1, 0, 2, 0])
    with pytest.raises(DataError, match=r"unknown label.*'zz'"):
        encode_labels(["a", "zz"], ["a", "b"])
    with pytest.raises(DataError, match="duplicates"):
        encode_labels(["a"], ["a", "a"])


def test_accuracy_f1_nll_brier_match_sklearn():
    p, y = make_probs()
    assert abs(accuracy(p, y) - accuracy_score(y, p.argmax(1))) < TOL
    assert abs(macro_f1(p, y) - f1_score(y, p.argmax(1), average="macro")) < TOL
    assert abs(nll(p, y) - log_loss(y, p, labels=range(4))) < 1e-10
    ref = brier_score_loss(y, p, labels=range(4), scale_by_half=False)
    assert abs(brier(p, y) - ref) < TOL
    # a perfect predictor scores 0; a uniform one scores 1 - 1/C
    onehot = np.eye(4)[y]
    assert brier(onehot, y) == 0 and abs(brier(np.full((len(y), 4), 0.25), y) - 0.75) < TOL


def test_nll_clips_zero_probability():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert abs(nll(p, [1, 0]) - (-np.log(1e-12) - np.log(0.5)) / 2) < 1e-9


def test_macro_f1_counts_absent_class_as_zero():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    assert abs(macro_f1(p, [0, 1]) - 2 / 3) < TOL


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("temp", [1.0, 0.4])
def test_ece_matches_sklearn_calibration_curve(strategy, temp):
    p, y = make_probs(temp=temp, seed=1)
    conf, hit = p.max(1), p.argmax(1) == y
    ref = ece_oracle(conf, hit, 15, strategy)
    assert abs(ece(p, y, strategy=strategy) - ref) < TOL
    ref_cw = np.mean([ece_oracle(p[:, c], y == c, 10, strategy) for c in range(4)])
    assert abs(classwise_ece(p, y, n_bins=10, strategy=strategy) - ref_cw) < TOL


def test_ece_detects_overconfidence():
    p_ok, y = make_probs(n=3000, seed=2)
    p_over, _ = make_probs(n=3000, seed=2, temp=0.3)
    assert ece(p_ok, y) < 0.05 < ece(p_over, y)
    assert classwise_ece(p_ok, y) < classwise_ece(p_over, y)


def test_classification_metrics_record():
    p, y = make_probs(seed=3)
    rec = classification_metrics(p, y)
    assert isinstance(rec, ClassificationMetrics) and rec.n == len(y)
    assert (rec.accuracy, rec.nll, rec.brier, rec.ece) == (accuracy(p, y), nll(p, y), brier(p, y), ece(p, y))
    with pytest.raises(AttributeError):  # frozen
        rec.n = 3


# ------------------------------------------------------------------------------ risk-coverage
def aurc_geifman(conf, correct):
    """Literal Geifman et al. (2019) definition: mean over k of the error rate of the k most confident."""
    order = np.argsort(-conf)
    err = ~correct[order]
    return np.mean([err[:k].mean() for k in range(1, len(conf) + 1)])


def test_aurc_matches_geifman_definition():
    p, y = make_probs(seed=4)
    conf, correct = p.max(1), p.argmax(1) == y
    assert abs(aurc(conf, correct) - aurc_geifman(conf, correct)) < TOL
    # informative confidence beats random order; perfect ranking reaches the optimum
    rng = np.random.default_rng(0)
    assert aurc(conf, correct) < aurc(rng.uniform(size=len(y)), correct)
    assert aurc(correct.astype(float), correct) < aurc(conf, correct)


def test_risk_coverage_ties_are_order_free():
    conf = np.array([0.9, 0.9, 0.7, 0.7, 0.7, 0.2])
    correct = np.array([1, 0, 1, 1, 0, 0], bool)
    rc = risk_coverage_curve(conf, correct)
    np.testing.assert_allclose(rc.coverage, [2 / 6, 5 / 6, 1.0])
    np.testing.assert_allclose(rc.risk, [1 / 2, 2 / 5, 3 / 6])
    np.testing.assert_allclose(rc.threshold, [0.9, 0.7, 0.2])
    perm = np.array([1, 0, 4, 3, 2, 5])
    assert aurc(conf[perm], correct[perm]) == aurc(conf, correct)
    assert abs(aurc(conf, correct) - (2 / 6 * 1 / 2 + 3 / 6 * 2 / 5 + 1 / 6 * 3 / 6)) < TOL
    assert list(rc.to_frame().columns) == ["coverage", "risk", "threshold"]


# ------------------------------------------------------------------------ draws: uncertainties
def test_entropy_decomposition():
    rng = np.random.default_rng(5)
    draws = rng.dirichlet(np.ones(3) * 0.7, size=(50, 30))  # (S, n, C)
    total, alea, epi = predictive_entropy(draws), expected_entropy(draws), mutual_information(draws)
    assert total.shape == alea.shape == epi.shape == (30,)
    # MI computed independently as the mean KL(p_s || p_bar)
    p_bar = draws.mean(0)
    mi_kl = np.mean([entropy(draws[s].T, p_bar.T) for s in range(50)], axis=0)
    np.testing.assert_allclose(epi, mi_kl, atol=1e-10)
    np.testing.assert_allclose(total, alea + epi, atol=1e-10)
    assert np.all(epi > 0) and np.all(alea >= 0) and np.all(total <= np.log(3) + 1e-12)
    # identical draws: no epistemic uncertainty
    same = np.repeat(draws[:1], 10, axis=0)
    np.testing.assert_allclose(mutual_information(same), 0.0, atol=1e-12)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "probs, y, match",
    [
        ([[0.5, np.nan], [0.5, 0.5]], [0, 1], "NaN"),
        ([[0.5, 0.6], [0.5, 0.5]], [0, 1], "sum to 1"),
        ([[2.0, -1.0], [0.5, 0.5]], [0, 1], "outside"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, 2], r"outside 0\.\.1"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, 1, 1], "must match"),
        ([[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "encode_labels"),
        ([0.5, 0.5], [0], "2-D"),
    ],
)
def test_input_errors_are_explained(probs, y, match):
    with pytest.raises(DataError, match=match):
        classification_metrics(probs, y)


def test_other_errors():
    with pytest.raises(DataError, match="strategy"):
        ece(np.full((2, 2), 0.5), [0, 1], strategy="equal")
    with pytest.raises(DataError, match="lengths mismatched"):
        aurc([0.1, 0.2], [True])
    with pytest.raises(DataError, match="sum to 1"):
        predictive_entropy(np.full((2, 3, 2), 0.6))


# ---------------------------------------------------------------------------------- imputation
def test_imputation_metrics_against_scipy_and_coverage():
    rng = np.random.default_rng(6)
    n, F, S = 300, 6, 400
    mu = rng.normal(size=(n, F))
    true = mu + rng.normal(size=(n, F))  # truth ~ N(mu, 1)
    draws = mu[None] + rng.normal(size=(S, n, F))  # calibrated predictive
    true[0, 0] = np.nan  # missing ground truth is ignored
    true[:, 5] = 3.0  # constant feature: no correlation, must not break the median
    res = imputation_metrics(true, draws)
    mean = draws.mean(0)
    ok = ~np.isnan(true[:, 0])
    ref_r = [pearsonr(true[ok, 0], mean[ok, 0])[0]] + [pearsonr(true[:, f], mean[:, f])[0] for f in range(1, 5)]
    np.testing.assert_allclose(res.per_feature["pearson_r"][:5], ref_r, atol=1e-12)
    assert np.isnan(res.per_feature["pearson_r"][5])
    assert abs(res.pearson_r - np.median(ref_r)) < 1e-12
    ref_rmse = [np.sqrt(np.mean((true[ok, 0] - mean[ok, 0]) ** 2))] + [
        np.sqrt(np.mean((true[:, f] - mean[:, f]) ** 2)) for f in range(1, 6)]
    np.testing.assert_allclose(res.per_feature["rmse"], ref_rmse, atol=1e-12)
    assert abs(res.rmse - np.median(ref_rmse)) < 1e-12
    assert res.n_features == F
    # calibrated draws: coverage near nominal on features 0..4
    sub = imputation_metrics(true[:, :5], draws[:, :, :5])
    assert abs(sub.coverage_50 - 0.5) < 0.05 and abs(sub.coverage_90 - 0.9) < 0.03
    # overconfident draws under-cover
    narrow = imputation_metrics(true[:, :5], mu[None, :, :5] + 0.3 * rng.normal(size=(S, n, 5)))
    assert narrow.coverage_90 < 0.5


def test_imputation_errors():
    with pytest.raises(DataError, match=r"shape \(S, n, F\)"):
        imputation_metrics(np.zeros((3, 2)), np.zeros((5, 3, 3)))
    with pytest.raises(DataError, match="NaN"):
        imputation_metrics(np.zeros((3, 2)), np.full((5, 3, 2), np.nan))


# ----------------------------------------------------------------- ECE consistency resampling
def _dirichlet_probs(rng, n, C, sharp):
    logits = rng.normal(size=(n, C)) * sharp
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ece_consistency_null_draws_equal_ece_on_drawn_labels():
    from bayesfuse.metrics.classification import _null_ece_draws
    rng = np.random.default_rng(0)
    p = _dirichlet_probs(rng, 60, 4, 2.0)
    draws = _null_ece_draws(p, 15, "uniform", 5, np.random.default_rng(1))
    # replay the same uniforms with the loop-based ece on explicitly drawn labels
    u = np.random.default_rng(1).random((5, 60))
    cum = np.cumsum(p, axis=1)
    for r in range(5):
        y = np.array([np.searchsorted(cum[i], u[r, i], side="left") for i in range(60)])
        y = np.minimum(y, 3)
        assert draws[r] == pytest.approx(bf_metrics.ece(p, y), abs=1e-12)


def test_ece_consistency_calibrated_passes_overconfident_fails():
    """Positive control: labels drawn from the probabilities -> p-values ~ uniform (rejection rate at
    0.05 within binomial slack). Negative control: the same labels scored with sharpened (over-confident)
    probabilities -> rejected almost always."""
    rng = np.random.default_rng(3)
    rej_cal, rej_over = 0, 0
    reps = 120
    for _ in range(reps):
        p = _dirichlet_probs(rng, 150, 3, 2.5)
        y = (rng.random(150)[:, None] > np.cumsum(p, 1)[:, :-1]).sum(1)
        rej_cal += bf_metrics.ece_consistency(p, y, n_resamples=400, seed=int(rng.integers(1e9))).p_value < 0.05
        sharp = p ** 3 / (p ** 3).sum(1, keepdims=True)
        rej_over += bf_metrics.ece_consistency(sharp, y, n_resamples=400, seed=int(rng.integers(1e9))).p_value < 0.05
    # binomial(120, 0.05): mean 6, sd 2.4 -> allow up to 14 (3.3 sd)
    assert rej_cal <= 14, rej_cal
    assert rej_over >= 0.8 * reps, rej_over


def test_ece_consistency_floor_and_validation():
    rng = np.random.default_rng(5)
    p = _dirichlet_probs(rng, 100, 3, 3.0)
    y = p.argmax(1)
    res = bf_metrics.ece_consistency(p, y, n_resamples=500)
    assert res.null_quantiles[0] <= res.null_mean <= res.null_quantiles[1]
    assert res.null_mean > 0.0        # a finite test set has a positive ECE floor
    with pytest.raises(DataError, match="n_resamples"):
        bf_metrics.ece_consistency(p, y, n_resamples=0)
