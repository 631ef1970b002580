"""Regression tests for defects found in review (each failed before its fix)."""

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.exceptions import ConvergenceError


def _cohort(seed, time_scale, classes):
    rng = np.random.default_rng(seed)
    n = 60
    ids = [f"p{seed}_{i}" for i in range(n)]
    x = pd.DataFrame(rng.normal(size=(n, 5)), index=ids, columns=[f"g{k}" for k in range(5)])
    t = pd.DataFrame({"subtype": rng.choice(classes, n), "time": rng.exponential(time_scale, n) + 0.01,
                      "event": rng.integers(0, 2, n)}, index=ids)
    return bf.MultiModalData.from_frames({"x": x}, targets=t)


def test_reused_head_spec_objects_do_not_leak_fitted_state():
    cat, surv = bf.heads.Categorical(), bf.heads.Survival(n_intervals=4)
    m1 = bf.FusionModel(_cohort(0, 10.0, ["A", "B", "C"]), heads={"subtype": cat, "s": surv}, latent_dim=2)
    m2 = bf.FusionModel(_cohort(1, 1000.0, ["A", "B"]), heads={"subtype": cat, "s": surv}, latent_dim=2)
    assert m1.heads["s"] is not m2.heads["s"]
    assert m2.heads["subtype"].classes == ["A", "B"] and m1.heads["subtype"].classes == ["A", "B", "C"]
    assert max(m2.heads["s"].cuts) > 50 > max(m1.heads["s"].cuts)
    assert cat.classes is None and surv.cuts is None and cat.weight == "auto"   # the user's objects untouched


def test_divergence_before_any_finite_epoch_is_an_error():
    data = _cohort(0, 10.0, ["A", "B"])
    m = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=4)
    with pytest.raises(ConvergenceError, match="diverged"):
        m.fit(max_epochs=3, lr=1e30, progress=False)


def test_modality_weights_prior_share_uses_unit_prior_precision():
    data = _cohort(0, 10.0, ["A", "B"])
    m = bf.FusionModel(data, heads={}, latent_dim=3, hidden=4).fit(max_epochs=2, progress=False)
    post = m.predict(data, num_samples=2)
    w = post.modality_weights()
    expert = post.modality_precision.sum(axis=2)[:, 0]
    np.testing.assert_allclose(w["prior"].to_numpy(), 3.0 / (3.0 + expert), rtol=1e-6)
    np.testing.assert_allclose(w.sum(axis=1).to_numpy(), 1.0, rtol=1e-9)


def test_shift_time_is_fixed_once_from_training_targets_and_saved(tmp_path):
    data = _cohort(0, 10.0, ["A", "B"])
    t = data.targets.copy()
    t.iloc[0, t.columns.get_loc("time")] = 0.0
    data = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t)
    m = bf.FusionModel(data, heads={"s": bf.heads.Survival(n_intervals=3, nonpositive_times="shift")}, latent_dim=2)
    pos = t["time"][t["time"] > 0].min()
    assert m.heads["s"].shift_time == pytest.approx(0.5 * pos)
    m.fit(max_epochs=2, progress=False)
    m.save(tmp_path / "m")
    assert bf.FusionModel.load(tmp_path / "m").heads["s"].shift_time == pytest.approx(0.5 * pos)


def test_mc_dropout_needs_a_hidden_layer():
    data = _cohort(0, 10.0, ["A", "B"])
    with pytest.raises(ValueError, match="hidden > 0"):
        bf.FusionModel(data, heads={"subtype": "categorical"}, hidden=0, bayesian="mc_dropout")


@pytest.mark.parametrize("mode", ["encoders+heads", "mc_dropout"])
def test_impute_in_weight_draw_modes_uses_per_draw_weights(mode, monkeypatch):
    """impute must take predict's per-draw path (weights / dropout masks drawn once per draw and shared by all
    patients), never the single-weight-perturbation path ``module.posterior`` (the defect)."""
    data = _cohort(0, 10.0, ["A", "B"])
    x2 = data.modality("x").rename(columns=lambda c: c + "_b") * 2 + 1
    data = bf.MultiModalData.from_frames({"x": data.modality("x"), "y": x2}, targets=data.targets)
    m = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=8, encoder_dropout=0.3,
                       bayesian=mode).fit(max_epochs=3, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("impute used module.posterior in a weight-draw mode")

    monkeypatch.setattr(m.module, "posterior", forbidden)
    imp = m.impute(data.drop_modalities(["y"]), modalities=["y"], num_samples=40, seed=0)
    assert imp["y"].shape == (40, data.n_samples, 5) and np.isfinite(imp["y"]).all()
    assert (imp["y"].std(axis=0) > 0).all()


def test_label_alignment_is_one_rule_for_evaluation_and_calibration():
    """Integer-indexed labels and partly missing labels are handled the same way everywhere."""
    from bayesfuse.calibration._common import align_labels
    from bayesfuse.evaluation import evaluate_classification

    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(30)]
    x = pd.DataFrame(rng.normal(size=(30, 4)), index=ids, columns=list("abcd"))
    y = pd.Series(rng.choice(["A", "B"], 30), index=ids)
    data = bf.MultiModalData.from_frames({"x": x}, targets=pd.DataFrame({"subtype": y}))
    m = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=4).fit(max_epochs=2, progress=False)
    post = m.predict(data, num_samples=5)
    int_labels = pd.Series(y.to_numpy(), index=np.arange(30))          # integer ids
    codes = align_labels(post, int_labels, "subtype")
    assert (codes == (y.to_numpy() == "B").astype(int)).all()
    partial = int_labels.astype(object)
    partial.iloc[:5] = np.nan
    with pytest.raises(bf.exceptions.DataError, match="missing"):
        align_labels(post, partial, "subtype")
    assert (align_labels(post, partial, "subtype", allow_missing=True)[:5] == -1).all()
    assert evaluate_classification(post, partial, "subtype").n == 25


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_draws_keep_the_model_dtype(dtype):
    """A float64 model returned float32 head draws and latents (precision the user asked for was lost)."""
    data = _cohort(0, 10.0, ["A", "B"])
    m = bf.FusionModel(data, heads={"subtype": "categorical", "s": bf.heads.Survival(n_intervals=3)}, latent_dim=2,
                       hidden=4, dtype=dtype, device="cpu").fit(max_epochs=2, progress=False)
    post = m.predict(data, num_samples=3, return_latent=True)
    assert post.probs("subtype").dtype == np.dtype(dtype)
    assert post.draws["s"]["log_hazard"].dtype == np.dtype(dtype)
    assert post.latent.dtype == np.dtype(dtype)
