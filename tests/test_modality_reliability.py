"""Modality reliability (:mod:`bayesfuse.model.modality_reliability`): a per-modality multiplier of
each expert's precision, fitted after SVI on held-out patients.

Positive control: a pure-noise modality with many features is down-weighted and the test NLL falls.
Negative control: a cohort whose modalities all carry signal keeps every multiplier near 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import bayesfuse as bf
from bayesfuse.evaluation.classification import evaluate_classification
from bayesfuse.module.fusion import product_of_experts


def test_reliability_scales_expert_precision():
    torch.manual_seed(0)
    loc, scale = torch.randn(3, 5, 2, dtype=torch.float64), torch.rand(3, 5, 2, dtype=torch.float64) + 0.2
    mask = torch.ones(3, 5, dtype=torch.float64)
    r = torch.tensor([1.0, 0.0, 0.25], dtype=torch.float64)
    m_r, s_r, p_r = product_of_experts(loc, scale, mask * r[:, None])
    kept = scale[[0, 2]].clone()
    kept[1] *= 2.0                                   # r = 0.25 on expert 2 = its sd doubled; r = 0 = hidden
    m_h, s_h, _ = product_of_experts(loc[[0, 2]], kept, mask[[0, 2]])
    torch.testing.assert_close(m_r, m_h)
    torch.testing.assert_close(s_r, s_h)
    torch.testing.assert_close(p_r[2], 0.25 / scale[2] ** 2)
    assert torch.all(p_r[1] == 0)


def _cohort(noise_features: int, seed: int = 0):
    data, _ = bf.datasets.simulate(n_patients=700, n_origins=0, seed=seed, test_fraction=0.4,
                                   modalities={"a": ("gaussian", 30), "b": ("gaussian", 30)})
    if noise_features:
        rng = np.random.default_rng(seed + 100)
        ids = data.sample_ids
        data = data.with_modality("noise", pd.DataFrame(rng.standard_normal((len(ids), noise_features)), index=ids,
                                                        columns=[f"n{k}" for k in range(noise_features)]))
    return data.subset(split="train"), data.subset(split="test")


def _fit(train):
    torch.set_num_threads(1)
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=64)
    return model.fit(max_epochs=80, seed=0, progress=False, validation_fraction=0.2)


@pytest.fixture(scope="module")
def noisy_model():
    train, test = _cohort(noise_features=1500)
    return _fit(train), test


def test_noise_modality_is_down_weighted(noisy_model):
    model, test = noisy_model
    rel = model.modality_reliability_
    assert list(rel.index) == model.modalities
    assert rel["noise"] <= 0.25 and rel["noise"] < rel[["a", "b"]].min(), rel
    y = test.targets["subtype"]
    fitted = evaluate_classification(model.predict(test, 100, seed=1, calibrated=False), y, "subtype")
    kept = model.module.reliability.clone()
    try:
        model.module.reliability.fill_(1.0)
        plain = evaluate_classification(model.predict(test, 100, seed=1, calibrated=False), y, "subtype")
    finally:
        model.module.reliability.copy_(kept)
    assert fitted.nll < plain.nll - 0.1 and fitted.accuracy > plain.accuracy + 0.05, (fitted, plain)


def test_informative_modalities_keep_their_weight():
    train, test = _cohort(noise_features=0)
    rel = _fit(train).modality_reliability_
    assert np.all((rel >= 0.5) & (rel <= 2.0)), rel


def test_reliability_saved_and_old_files_load(noisy_model, tmp_path):
    model, test = noisy_model
    model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m")
    pd.testing.assert_series_equal(loaded.modality_reliability_, model.modality_reliability_)
    np.testing.assert_array_equal(loaded.predict(test, 20, seed=2).probs("subtype"),
                                  model.predict(test, 20, seed=2).probs("subtype"))
    # a file written before reliability existed has no such tensor: it loads with all multipliers 1
    weights = tmp_path / "m" / "weights.safetensors"
    tensors = load_file(weights)
    del tensors["module.reliability"]
    save_file(tensors, weights)
    old = bf.FusionModel.load(tmp_path / "m")
    assert np.all(old.modality_reliability_ == 1.0)


def test_calibrate_false_keeps_reliability_one():
    train, _ = _cohort(noise_features=200)
    torch.set_num_threads(1)
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    model.fit(max_epochs=5, seed=0, progress=False, calibrate=False)
    assert np.all(model.modality_reliability_ == 1.0)
