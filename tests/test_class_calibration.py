"""Post-hoc calibration map of categorical heads (fit(calibrate=True), predict(calibrated=...)).

Numpy level: the MAP temperature against a grid search of the same objective; a calibrated
source left alone (positive control) and an over-confident one corrected (negative control);
per-pattern shrinkage. Model level: fitted without test patients, applied to every draw,
saved and reloaded, switched off by calibrate=False.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import log_softmax

import bayesfuse as bf
from bayesfuse.metrics import ece
from bayesfuse.posterior.class_calibration import (
    ClassCalibration,
    map_log_temperature,
    tempered_log_predictive,
)

torch.set_num_threads(1)


def _source(n, scale, seed, draws=8, C=3):
    """Per-draw log-probs whose labels are drawn from softmax(base); the draws carry ``scale * base``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1.5, (n, C))
    p_true = np.exp(log_softmax(base, axis=-1))
    y = np.array([rng.choice(C, p=p) for p in p_true])
    jitter = rng.normal(0, 0.05, (draws, n, C))
    return log_softmax(scale * (base[None] + jitter), axis=-1), y


def test_map_temperature_matches_grid_search():
    logp, y = _source(400, 2.0, seed=1)
    log_t = map_log_temperature(logp, y, None, 0.0, 1.0)
    grid = np.linspace(-1.5, 2.0, 3501)
    obj = [-(tempered_log_predictive(logp, np.exp(g))[np.arange(len(y)), y]).sum() + 0.5 * g ** 2 for g in grid]
    assert abs(log_t - grid[int(np.argmin(obj))]) < 2e-3


@pytest.mark.parametrize("scale, lo, hi", [(1.0, 0.85, 1.18), (2.5, 2.1, 2.9), (0.5, 0.4, 0.6)])
def test_temperature_recovers_the_miscalibration(scale, lo, hi):
    """Positive control (scale 1: left alone) and negative controls (over- / under-confident: corrected)."""
    logp, y = _source(3000, scale, seed=2)
    rec = ClassCalibration.fit("h", ["a"], [("a", logp, y, np.arange(len(y)))])
    assert lo < rec.pooled < hi, rec.pooled
    test_logp, test_y = _source(3000, scale, seed=3)
    raw = np.exp(tempered_log_predictive(test_logp, 1.0))
    cal = rec.apply(np.exp(test_logp), np.ones((len(test_y), 1), bool)).mean(0)
    if scale == 1.0:
        assert abs(ece(cal, test_y) - ece(raw, test_y)) < 0.01     # a calibrated source stays calibrated
    else:
        assert ece(cal, test_y) < 0.5 * ece(raw, test_y)           # a miscalibrated one is corrected
        assert ece(cal, test_y) < 0.03


def test_pattern_temperatures_shrink_to_pooled_when_few():
    big_lp, big_y = _source(3000, 2.0, seed=4)
    few_lp, few_y = _source(6, 0.5, seed=5)
    many_lp, many_y = _source(3000, 0.5, seed=6)
    groups = [("a+b", big_lp, big_y, np.arange(3000)), ("a", few_lp, few_y, np.arange(6))]
    rec = ClassCalibration.fit("h", ["a", "b"], groups)
    assert abs(np.log(rec.temperatures["a"]) - np.log(rec.pooled)) < 0.25        # 6 rows: near the pooled value
    rec2 = ClassCalibration.fit("h", ["a", "b"], [groups[0], ("a", many_lp, many_y, np.arange(3000, 6000))])
    assert rec2.temperatures["a"] < 0.7 < 1.6 < rec2.temperatures["a+b"]         # enough rows: its own value
    pres = np.array([[True, True], [True, False], [False, True]])
    t = rec2.patient_temperatures(pres)
    assert t[0] == rec2.temperatures["a+b"] and t[1] == rec2.temperatures["a"] and t[2] == rec2.pooled
    back = ClassCalibration.from_config(rec2.to_config())
    assert back == rec2


def test_all_correct_calibration_set_keeps_temperature_finite():
    """Zero errors: the likelihood alone would send T to 0; the prior keeps it bounded."""
    logp, y = _source(30, 1.0, seed=7)
    y = np.exp(logp).mean(0).argmax(1)
    rec = ClassCalibration.fit("h", ["a"], [("a", logp, y, np.arange(30))])
    assert 0.1 < rec.pooled < 1.0


# ------------------------------------------------------------------------------- model level
@pytest.fixture(scope="module")
def overconfident():
    """A noisy-label simulator, early-stopped on the validation ELBO: the up-weighted head is over-confident
    (measured T ~ 1.5-1.9; stopping on the heads' validation NLL, the default, gives T ~ 1.09)."""
    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=1600, missing_rate=0.3, seed=0, test_fraction=0.6)
    train, test = data.subset(split="train"), data.subset(split="test")
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    model.fit(max_epochs=120, seed=0, progress=False, early_stopping="elbo")
    return data, train, test, model


def test_overconfident_model_is_corrected(overconfident):
    _, _, test, model = overconfident
    cal = model.class_calibration_["subtype"]
    assert cal.n_calibration == model.train_config_["n_validation"] > 0
    assert cal.pooled > 1.1 and cal.nll_after < cal.nll_before
    y = test.targets["subtype"]
    raw = model.predict(test, 100, calibrated=False)
    post = model.predict(test, 100)
    from bayesfuse.evaluation.classification import evaluate_classification

    e_raw = evaluate_classification(raw, y, "subtype")
    e_cal = evaluate_classification(post, y, "subtype")
    assert e_cal.ece < e_raw.ece - 0.02 and e_cal.nll < e_raw.nll, (e_raw, e_cal)
    assert e_cal.accuracy == pytest.approx(e_raw.accuracy, abs=0.01)      # temperature hardly moves argmax
    # every draw is tempered with its patient's pattern temperature
    t = cal.patient_temperatures(post.presence[model.modalities].to_numpy())
    expect = np.exp(log_softmax(np.log(raw.probs("subtype").astype(float)) / t[None, :, None], axis=-1))
    np.testing.assert_allclose(post.probs("subtype"), expect, atol=2e-5)
    assert post.extra["class_calibration"]["subtype"]["pooled"] == cal.pooled


def test_map_never_sees_test_patients(overconfident, tmp_path):
    """Planted label noise in the test set changes nothing: same map after a refit and after predict."""
    data, train, test, model = overconfident
    before = model.class_calibration_["subtype"].to_config()
    noisy = data.targets.copy()
    test_rows = noisy["split"] == "test"
    noisy.loc[test_rows, "subtype"] = np.random.default_rng(0).permutation(noisy.loc[test_rows, "subtype"].to_numpy())
    noisy_data = bf.MultiModalData.from_frames({m: data.modality(m) for m in data.modality_names}, noisy)
    refit = bf.FusionModel(noisy_data.subset(split="train"), heads={"subtype": "categorical"}, latent_dim=4,
                           hidden=32).fit(max_epochs=120, seed=0, progress=False,
                                                       early_stopping="elbo")
    assert refit.class_calibration_["subtype"].to_config() == before
    pd.testing.assert_series_equal(refit.modality_reliability_, model.modality_reliability_)
    model.predict(noisy_data.subset(split="test"), 50)
    assert model.class_calibration_["subtype"].to_config() == before
    assert set(model.train_config_["validation_ids"]).isdisjoint(test.sample_ids)


def test_saved_map_reproduces_predictions(overconfident, tmp_path):
    _, _, test, model = overconfident
    model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m")
    assert loaded.class_calibration_["subtype"] == model.class_calibration_["subtype"]
    np.testing.assert_array_equal(loaded.predict(test, 30, seed=3).probs("subtype"),
                                  model.predict(test, 30, seed=3).probs("subtype"))


def test_calibrate_false_and_explicit_calibrate(overconfident):
    data, train, test, model = overconfident
    off = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    off.fit(max_epochs=120, seed=0, progress=False, calibrate=False, early_stopping="elbo")
    assert off.class_calibration_ == {} and np.all(off.modality_reliability_ == 1.0)
    maps = off.calibrate()             # default: the fit's own early-stopping patients
    assert maps["subtype"] == model.class_calibration_["subtype"]
    pd.testing.assert_series_equal(off.modality_reliability_, model.modality_reliability_)
    np.testing.assert_array_equal(off.predict(test, 20, calibrated=False).probs("subtype"),
                                  model.predict(test, 20, calibrated=False).probs("subtype"))
    with pytest.raises(bf.exceptions.DataError, match="No held-out patients"):
        bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32).fit(
            max_epochs=5, validation_fraction=0.0, progress=False, seed=0).calibrate()


def test_auto_validation_share_gives_small_cohorts_enough_calibration_patients():
    from bayesfuse.model.fusion_model import MIN_CALIBRATION_PATIENTS, auto_validation_fraction

    assert auto_validation_fraction(100, True) == 0.2          # capped at 0.2: 20 patients, not 10
    assert auto_validation_fraction(250, True) == pytest.approx(MIN_CALIBRATION_PATIENTS / 250)
    assert auto_validation_fraction(1000, True) == 0.1
    assert auto_validation_fraction(100, False) == 0.1         # survival-only models lost with more held out
    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=150, seed=3)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=16)
    model.fit(max_epochs=3, seed=0, progress=False)
    cfg = model.train_config_
    assert cfg["validation_fraction"] == pytest.approx(min(0.2, MIN_CALIBRATION_PATIENTS / 150))
    assert cfg["n_validation"] >= 0.19 * 150 and model.class_calibration_["subtype"].n_calibration == cfg["n_validation"]
    model.fit(max_epochs=3, seed=0, progress=False, validation_fraction=0.1)   # an explicit share is kept
    assert model.train_config_["validation_fraction"] == 0.1 and model.train_config_["n_validation"] <= 16
    model.fit(max_epochs=1, seed=0, progress=False, validation_fraction=np.float32(0.25))   # numpy numbers work
    assert type(model.train_config_["validation_fraction"]) is float
    for bad in ("big", True, 1.0, -0.1):
        with pytest.raises(bf.exceptions.ArgumentError, match="'auto' or a number"):
            model.fit(max_epochs=1, validation_fraction=bad, progress=False)
