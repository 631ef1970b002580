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


# --------------------------------------------------------------------------------------------------
# Fresh-eyes API review (session 6): bad input must give a clear error, never a raw library error.

def _fitted(tmp_path=None, heads=None):
    data = _cohort(0, 10.0, ["A", "B"])
    heads = {"subtype": "categorical"} if heads is None else heads
    m = bf.FusionModel(data, heads=heads, latent_dim=2, hidden=4).fit(max_epochs=2, progress=False)
    return m, data


def test_predict_and_impute_on_an_empty_cohort_name_the_problem():
    """`data.subset(ids=[])` gave a raw `torch.cat(): expected a non-empty list` from predict."""
    m, data = _fitted()
    empty = data.subset(ids=[])
    with pytest.raises(bf.exceptions.DataError, match="no patients"):
        m.predict(empty, num_samples=3)
    with pytest.raises(bf.exceptions.DataError, match="no patients"):
        m.impute(empty, modalities=["x"], num_samples=3)


def test_loading_a_corrupted_save_is_a_model_format_error(tmp_path):
    """Broken config.json / truncated or foreign weights raised JSONDecodeError / SafetensorError / RuntimeError."""
    import shutil

    m, data = _fitted()
    good = m.save(tmp_path / "good")
    other = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=3, hidden=6).fit(max_epochs=1,
                                                                                            progress=False)
    other.save(tmp_path / "other")
    cases = {}
    for name in ("json", "truncated", "foreign", "keys"):
        cases[name] = shutil.copytree(good, tmp_path / name)
    (cases["json"] / "config.json").write_text("{not json")
    w = (good / "weights.safetensors").read_bytes()
    (cases["truncated"] / "weights.safetensors").write_bytes(w[: len(w) // 2])
    shutil.copy(tmp_path / "other" / "weights.safetensors", cases["foreign"] / "weights.safetensors")
    import json

    cfg = json.loads((good / "config.json").read_text())
    del cfg["model"]
    (cases["keys"] / "config.json").write_text(json.dumps(cfg))
    for path in cases.values():
        with pytest.raises(bf.exceptions.ModelFormatError, match="corrupted|not a readable"):
            bf.FusionModel.load(path)
    assert np.array_equal(bf.FusionModel.load(good).predict(data, num_samples=2).probs("subtype"),
                          m.predict(data, num_samples=2).probs("subtype"))   # positive control


def test_refitting_a_loaded_model_says_what_to_do(tmp_path):
    """fit() on FusionModel.load(...) raised AttributeError: 'NoneType' object has no attribute 'presence'."""
    m, _ = _fitted()
    loaded = bf.FusionModel.load(m.save(tmp_path / "m"))
    with pytest.raises(bf.exceptions.DataError, match="training data"):
        loaded.fit(max_epochs=1, progress=False)


def test_report_states_patients_whose_label_the_model_does_not_know(tmp_path):
    """build_report silently dropped patients with a class unseen in training (accuracy over the rest only)."""
    from bayesfuse.evaluation import build_report

    m, data = _fitted()
    t = data.targets.copy()
    t.iloc[:5, t.columns.get_loc("subtype")] = "NEW"
    d = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t)
    with pytest.warns(bf.exceptions.BayesFuseWarning, match="NEW"):
        rep = build_report(m, d, tmp_path / "rep", num_samples=10)
    text = rep.markdown.read_text()
    assert "NEW" in text and "5 patient(s)" in text
    # labels of another dtype than the training labels: the message says why nothing is left
    t2 = data.targets.copy()
    t2["subtype"] = t2["subtype"].map({"A": 0, "B": 1})
    d2 = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t2)
    with pytest.raises(bf.exceptions.DataError, match="among the model's classes"):
        with pytest.warns(bf.exceptions.BayesFuseWarning):
            build_report(m, d2, tmp_path / "rep2", num_samples=10)


def test_cli_fit_can_opt_in_to_nonpositive_survival_times(tmp_path, capsys):
    """The CLI had no way to pass Survival(nonpositive_times=...): tcga_gbmlgg and metabric could not be fitted."""
    from bayesfuse.cli import main

    data = _cohort(0, 10.0, ["A", "B"])
    folder = tmp_path / "cohort"
    folder.mkdir()
    data.modality("x").to_csv(folder / "x.csv")
    t = data.targets.copy()
    t.iloc[0, t.columns.get_loc("time")] = 0.0
    t.to_csv(folder / "targets.csv")
    args = ["fit", str(folder), "--head", "s=survival:time,event", "--max-epochs", "2", "--latent-dim", "2", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "m0")]) == 2
    assert "--nonpositive-times" in capsys.readouterr().err
    assert main(args + ["--nonpositive-times", "shift", "--out", str(tmp_path / "m1")]) == 0
    assert bf.FusionModel.load(tmp_path / "m1").heads["s"].nonpositive_times == "shift"
    assert main(["fit", str(folder), "--head", "s=survival:time", "--out", str(tmp_path / "m2")]) == 2
    assert "TIME,EVENT" in capsys.readouterr().err
    assert main(["fit", str(folder), "--head", "subtype=foo", "--out", str(tmp_path / "m3")]) == 2   # was a traceback
    assert "categorical" in capsys.readouterr().err


def test_all_nan_training_column_is_named_in_one_clear_warning():
    """An all-NaN training column leaked numpy's 'All-NaN slice' / scipy warnings and was kept silently."""
    import warnings

    data = _cohort(0, 10.0, ["A", "B"])
    x = data.modality("x").copy()
    x["g1"] = np.nan
    x["g2"] = 1.0   # constant column: no scipy 'precision loss' noise either
    d = bf.MultiModalData.from_frames({"x": x}, targets=data.targets)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        bf.FusionModel(d, heads={"subtype": "categorical"}, latent_dim=2, hidden=4)
    msgs = [(w.category, str(w.message)) for w in rec]
    assert all(issubclass(c, bf.exceptions.BayesFuseWarning) for c, _ in msgs), msgs
    assert len(msgs) == 1 and "'g1'" in msgs[0][1] and "entirely NaN" in msgs[0][1]


def test_cli_predict_writes_survival_summaries(tmp_path):
    """`bayesfuse predict` with a survival model wrote a header-only predictions.csv (categorical heads only)."""
    from bayesfuse.cli import main

    data = _cohort(0, 10.0, ["A", "B"])
    folder = tmp_path / "cohort"
    folder.mkdir()
    data.modality("x").to_csv(folder / "x.csv")
    data.targets.to_csv(folder / "targets.csv")
    assert main(["fit", str(folder), "--head", "os=survival:time,event", "--max-epochs", "2", "--latent-dim", "2",
                 "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert main(["predict", str(tmp_path / "m"), str(folder), "--num-samples", "5", "--out", str(tmp_path / "p")]) == 0
    surv = pd.read_csv(tmp_path / "p" / "survival_os.csv")
    cuts = bf.FusionModel.load(tmp_path / "m").heads["os"].cuts
    assert len(surv) == data.n_samples * len(cuts)
    assert set(surv.columns) >= {"sample_id", "time", "mean", "lower", "upper"}
    assert surv["mean"].between(0, 1).all() and (surv["lower"] <= surv["upper"]).all()
    per_patient = surv.groupby("sample_id", sort=False)["mean"].apply(lambda s: bool((np.diff(s) <= 1e-12).all()))
    assert per_patient.all()   # S(t) non-increasing over the (increasing) grid


def test_survival_head_without_any_training_event_warns():
    """A survival head trained on an all-censored cohort was accepted silently (hazard from the prior only)."""
    import warnings

    data = _cohort(0, 10.0, ["A", "B"])
    t = data.targets.copy()
    t["event"] = 0
    d = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t)
    with pytest.warns(bf.exceptions.DataWarning, match="no event"):
        bf.FusionModel(d, heads={"s": bf.heads.Survival(n_intervals=3)}, latent_dim=2, hidden=4)
    t.iloc[0, t.columns.get_loc("event")] = 1     # negative control: one event, no warning
    d = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bf.exceptions.DataWarning)
        bf.FusionModel(d, heads={"s": bf.heads.Survival(n_intervals=3)}, latent_dim=2, hidden=4)


def test_summary_with_times_but_no_head_is_not_silently_categorical_only():
    """post.summary(times=[...]) ignored `times` and returned only the categorical rows."""
    m, data = _fitted(heads={"subtype": "categorical", "s": bf.heads.Survival(n_intervals=3)})
    post = m.predict(data, num_samples=4)
    with pytest.raises(ValueError, match="survival head"):
        post.summary(times=[1.0, 5.0])
    assert len(post.summary("s", times=[1.0, 5.0])) == 2 * data.n_samples          # positive control
    assert len(post.summary()) == 2 * data.n_samples                                # categorical rows


def test_report_states_survival_patients_left_out_for_nonpositive_times(tmp_path):
    """build_report dropped survival patients with time <= 0 from every survival number without a word."""
    from bayesfuse.evaluation import build_report

    m, data = _fitted(heads={"s": bf.heads.Survival(n_intervals=3)})
    t = data.targets.copy()
    t.iloc[:2, t.columns.get_loc("time")] = [0.0, -1.0]
    d = bf.MultiModalData.from_frames({"x": data.modality("x")}, targets=t)
    text = build_report(m, d, tmp_path / "rep", num_samples=10).markdown.read_text()
    assert "2 patient(s) with 'time' <= 0" in text
    clean = build_report(m, data, tmp_path / "rep2", num_samples=10).markdown.read_text()
    assert "Left out" not in clean
