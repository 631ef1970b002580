"""Imputation quality where the answer is known, and the binary-imputation metrics.

Simulated cohort: modalities ``a`` and ``b`` share a latent factor (cross-modal signal); ``c``
is independent noise (no signal: the negative control). A trained model must impute ``a``
from the others better than the train mean with calibrated 90% intervals, and must NOT
find signal for ``c`` (its imputation may not beat the train mean by more than noise).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_imputation
from bayesfuse.exceptions import DataError
from bayesfuse.metrics import binary_imputation_metrics


def _cohort(n: int, seed: int) -> bf.MultiModalData:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    ids = [f"p{i}" for i in range(n)]
    w = np.random.default_rng(100).normal(0, 1, (3, 2, 8))  # fixed loadings across calls
    a = z @ w[0] + 0.6 * rng.standard_normal((n, 8)) + 5.0
    b = z @ w[1] + 0.6 * rng.standard_normal((n, 8))
    c = rng.standard_normal((n, 8)) * 2.0 - 1.0               # independent of z: no cross-modal signal
    frames = {m: pd.DataFrame(x, index=ids, columns=[f"{m}{j}" for j in range(8)]) for m, x in
              (("a", a), ("b", b), ("c", c))}
    return bf.MultiModalData.from_frames(frames)


@pytest.fixture(scope="module")
def fitted():
    train, test = _cohort(500, 0), _cohort(200, 1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(train, latent_dim=4, hidden=32, device="cpu", dtype="float64")
        model.fit(max_epochs=150, seed=0, progress=False)
    return model, train, test


def _train_mean_rmse(train, test, m):
    mu = train.modality(m).mean().to_numpy()
    return float(np.median(np.sqrt(((test.modality(m).to_numpy() - mu) ** 2).mean(0))))


def test_imputes_shared_signal_with_calibrated_intervals(fitted):
    model, train, test = fitted
    ev = evaluate_imputation(model, test, "a", num_samples=200)
    base = _train_mean_rmse(train, test, "a")
    assert ev.metrics.pearson_r > 0.6, ev.metrics
    assert ev.metrics.rmse < 0.8 * base, (ev.metrics.rmse, base)
    assert 0.85 <= ev.metrics.coverage_90 <= 0.95, ev.metrics.coverage_90
    assert 0.42 <= ev.metrics.coverage_50 <= 0.58, ev.metrics.coverage_50


def test_negative_control_no_signal_no_skill(fitted):
    """c is independent of everything: no correlation, no RMSE gain, intervals still calibrated."""
    model, train, test = fitted
    ev = evaluate_imputation(model, test, "c", num_samples=200)
    base = _train_mean_rmse(train, test, "c")
    assert abs(ev.metrics.pearson_r) < 0.15, ev.metrics.pearson_r
    assert ev.metrics.rmse > 0.97 * base, (ev.metrics.rmse, base)
    assert 0.85 <= ev.metrics.coverage_90 <= 0.95, ev.metrics.coverage_90


def test_binary_metrics_match_sklearn_and_controls():
    rng = np.random.default_rng(0)
    n, f = 300, 5
    logit = rng.normal(0, 2, (n, f))
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random((n, f)) < p).astype(float)
    y[:3, 0] = np.nan                                   # unobserved cells are ignored
    y[:, 4] = 0.0
    y[:2, 4] = 1.0                                      # only 2 positives: AUROC not scored
    p[:, 4] = 0.01
    res = binary_imputation_metrics(y, p)
    o = ~np.isnan(y[:, 0])
    assert res.per_feature["auroc"].iloc[0] == pytest.approx(roc_auc_score(y[o, 0], p[o, 0]))
    assert np.isnan(res.per_feature["auroc"].iloc[4]) and res.n_scored == 4
    assert res.auroc > 0.75                             # informative probabilities
    obs = ~np.isnan(y)
    assert res.brier == pytest.approx(np.mean((p[obs] - y[obs]) ** 2))
    # Negative control: a constant (prevalence) predictor has AUROC 0.5 and a worse log loss.
    const = np.broadcast_to(np.nanmean(y, 0), y.shape)
    base = binary_imputation_metrics(y, const)
    assert base.auroc == pytest.approx(0.5) and base.log_loss > res.log_loss
    with pytest.raises(DataError, match="0/1"):
        binary_imputation_metrics(y + 0.5, p)
    with pytest.raises(DataError, match="probabilities"):
        binary_imputation_metrics(y, p + 1.0)


def test_bernoulli_probabilities_are_rao_blackwellised_mean():
    data, _ = bf.datasets.simulate(n_patients=120, latent_dim=2, n_origins=0, seed=0,
                                   modalities={"expr": ("gaussian", 6), "mut": ("bernoulli", 5)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(data, heads={}, latent_dim=2, hidden=8, device="cpu", dtype="float64")
        model.fit(max_epochs=10, kl_warmup_epochs=2, seed=0, progress=False, validation_fraction=0)
    test = data.drop_modalities(["mut"])
    imp = model.impute(test, modalities="mut", num_samples=400, seed=3)
    prob = imp.probability("mut").to_numpy()
    assert prob.shape == (data.n_samples, 5) and ((prob > 0) & (prob < 1)).all()
    draws_mean = imp["mut"].mean(0)
    se = np.sqrt(prob * (1 - prob) / 400)
    assert np.abs(draws_mean - prob).max() < 5 * se.max()   # same quantity, less Monte-Carlo noise
    # Observed cells pass through as 0/1 in probability too.
    full = model.impute(data, modalities="mut", num_samples=5)
    np.testing.assert_array_equal(full.probability("mut").to_numpy(),
                                  data.modality("mut").reindex(data.sample_ids).to_numpy())
    with pytest.raises(ValueError, match="Bernoulli"):
        model.impute(test, modalities="expr", num_samples=5).probability("expr")
