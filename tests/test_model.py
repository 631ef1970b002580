"""FusionModel on simulated cohorts: accuracy vs Bayes-optimal, determinism, shapes, persistence."""


import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
from bayesfuse.exceptions import DataError, ModelFormatError, NoModalityWarning, NotFittedError

GAUSS = {"expression": ("gaussian", 60), "methylation": ("gaussian", 40), "protein": ("gaussian", 20)}
FIT = dict(max_epochs=60, seed=0, progress=False, kl_warmup_epochs=10, patience=15)


@pytest.fixture(scope="module")
def cohort():
    return bf.datasets.simulate(n_patients=500, latent_dim=3, modalities=GAUSS, n_subtypes=3, n_origins=4,
                                noise_scale=1.5, class_separation=3.0, seed=3)


@pytest.fixture(scope="module")
def fitted(cohort):
    data, _ = cohort
    model = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical", "origin": "categorical"},
                           latent_dim=4, hidden=32)
    model.fit(**FIT)
    return model


def _accuracy(post, head, labels):
    return float((post.predict(head).to_numpy() == labels.to_numpy()).mean())


def test_accuracy_close_to_bayes_optimal(cohort, fitted):
    data, truth = cohort
    test = data.subset(split="test")
    rows = np.flatnonzero(data.targets["split"].to_numpy() == "test")
    post = fitted.predict(test, num_samples=100)
    for head in ("subtype", "origin"):
        bayes = truth.bayes_probs(head)[rows]
        y = test.targets[head]
        bayes_acc = float((np.asarray(truth.classes[head])[bayes.argmax(1)] == y.to_numpy()).mean())
        acc = _accuracy(post, head, y)
        # same patients, same labels: the model may lose a few points to finite training data
        assert acc >= bayes_acc - 0.06, (head, acc, bayes_acc)
        # and the predictive probabilities track the Bayes-optimal ones
        mp = post.mean_probs(head)[truth.classes[head]].to_numpy()
        assert np.abs(mp - bayes).mean() < 0.12


def test_untrained_model_is_far_from_bayes(cohort):
    """Negative control for the test above: a model fitted for 1 epoch is not close."""
    data, truth = cohort
    m = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    m.fit(max_epochs=1, seed=0, progress=False, validation_fraction=0)
    post = m.predict(data.subset(split="test"), num_samples=20)
    rows = np.flatnonzero(data.targets["split"].to_numpy() == "test")
    mp = post.mean_probs("subtype")[truth.classes["subtype"]].to_numpy()
    assert np.abs(mp - truth.bayes_probs("subtype")[rows]).mean() > 0.12


def test_seeded_fits_are_bit_identical(cohort):
    data, _ = cohort
    train = data.subset(split="train")
    posts = []
    for _ in range(2):
        m = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=3, hidden=16)
        m.fit(max_epochs=5, seed=7, progress=False)
        posts.append(m.predict(data.subset(split="test"), num_samples=10, seed=1))
        hist = m.history_
    assert np.array_equal(posts[0].probs("subtype"), posts[1].probs("subtype"))
    assert np.array_equal(posts[0].latent, posts[1].latent)
    m3 = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=3, hidden=16)
    m3.fit(max_epochs=5, seed=8, progress=False)
    assert not np.array_equal(m3.predict(data.subset(split="test"), num_samples=10, seed=1).probs("subtype"),
                              posts[0].probs("subtype"))
    assert list(hist.columns[:3]) == ["epoch", "train_loss", "val_loss"] and len(hist) == 5


def test_predict_seed_controls_draws_only(fitted, cohort):
    data, _ = cohort
    test = data.subset(split="test")
    a = fitted.predict(test, num_samples=20, seed=0)
    b = fitted.predict(test, num_samples=20, seed=0)
    c = fitted.predict(test, num_samples=20, seed=1)
    assert np.array_equal(a.probs("subtype"), b.probs("subtype"))
    assert not np.array_equal(a.probs("subtype"), c.probs("subtype"))
    np.testing.assert_allclose(a.latent_loc, c.latent_loc)  # the posterior itself is deterministic
    d = fitted.predict(test, num_samples=20, seed=0, batch_size=7)   # chunking does not change the result
    np.testing.assert_allclose(a.latent_loc, d.latent_loc, rtol=1e-5, atol=1e-6)


def test_save_load_identical_draws(fitted, cohort, tmp_path):
    data, _ = cohort
    test = data.subset(split="test")
    fitted.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m")
    a = fitted.predict(test, num_samples=30, seed=3)
    b = loaded.predict(test, num_samples=30, seed=3)
    assert np.array_equal(a.probs("origin"), b.probs("origin"))
    assert np.array_equal(a.latent, b.latent)
    assert a.classes("subtype") == b.classes("subtype")
    pd.testing.assert_frame_equal(fitted.history_, loaded.history_, check_dtype=False)
    with pytest.raises(FileExistsError):
        fitted.save(tmp_path / "m")
    import json
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    from bayesfuse.model.persistence import FORMAT_VERSION
    assert cfg["format_version"] == FORMAT_VERSION == 3
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="format version 99"):
        bf.FusionModel.load(tmp_path / "m")
    with pytest.raises(ModelFormatError):
        bf.FusionModel.load(tmp_path / "nothing-here")


def test_saved_weights_contain_no_pickle(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "weights.safetensors"]
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m" / "weights.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "bayesfuse"


def test_shuffled_columns_give_identical_predictions(fitted, cohort):
    data, _ = cohort
    test = data.subset(split="test")
    rng = np.random.default_rng(0)
    mods = {m: test.modality(m)[rng.permutation(test.modality(m).columns)] for m in test.modality_names}
    shuffled = bf.MultiModalData.from_frames(mods, targets=test.targets)
    a = fitted.predict(test, num_samples=10, seed=0)
    b = fitted.predict(shuffled, num_samples=10, seed=0)
    assert np.array_equal(a.probs("subtype"), b.probs("subtype"))


@pytest.mark.parametrize("mods", [["expression"], ["expression", "protein"], ["expression", "methylation", "protein"]])
def test_output_shapes(fitted, cohort, mods):
    data, _ = cohort
    test = data.subset(split="test").select_modalities(mods)
    S, n = 12, test.n_samples
    post = fitted.predict(test, num_samples=S)
    assert post.probs("subtype").shape == (S, n, 3)
    assert post.probs("origin").shape == (S, n, 4)
    np.testing.assert_allclose(post.probs("origin").sum(-1), 1.0, rtol=1e-5)
    assert post.classes("origin") == ["O1", "O2", "O3", "O4"]
    assert list(post.sample_ids) == list(test.sample_ids)
    assert post.latent.shape == (S, n, 4) and post.latent_loc.shape == (n, 4)
    assert post.modality_precision.shape == (n, 3, 4)
    assert post.presence.shape == (n, 3) and (post.n_modalities == len(mods)).all()
    idata = post.to_inference_data()
    assert hasattr(idata, "posterior") and hasattr(idata, "constant_data")  # InferenceData (0.x) / DataTree (1.x)
    da = idata.posterior["subtype_probs"]
    assert da.dims == ("chain", "draw", "patient", "subtype_class")
    assert da.shape == (1, S, n, 3)
    assert list(idata.posterior["patient"].values) == [str(i) for i in test.sample_ids]
    summ = post.summary()
    assert len(summ) == n * (3 + 4)
    assert ((summ["lower"] <= summ["mean"] + 1e-9) & (summ["mean"] <= summ["upper"] + 1e-9)).all()
    lo, hi = post.credible_interval("subtype", 0.9)
    assert lo.shape == (n, 3) and (lo.to_numpy() <= hi.to_numpy()).all()


def test_fewer_modalities_widen_posterior(fitted, cohort):
    data, _ = cohort
    test = data.subset(split="test")
    full = fitted.predict(test, num_samples=5)
    one = fitted.predict(test.select_modalities(["protein"]), num_samples=5)
    assert (one.latent_scale > full.latent_scale).mean() > 0.95


def test_patient_without_modality_is_scored_from_prior_and_flagged(fitted, cohort):
    data, _ = cohort
    test = data.subset(split="test")
    ids = list(test.sample_ids[:5])
    mods = {m: test.modality(m).drop(index=ids[:2]) for m in test.modality_names}
    holes = bf.MultiModalData.from_frames(mods, targets=test.targets)
    with pytest.warns(NoModalityWarning, match="2 patient"):
        post = fitted.predict(holes, num_samples=8)
    assert list(post.sample_ids) == list(test.sample_ids)
    assert post.no_modality[:2].all() and not post.no_modality[2:].any()
    np.testing.assert_allclose(post.latent_loc[:2], 0.0, atol=1e-12)
    np.testing.assert_allclose(post.latent_scale[:2], 1.0, atol=1e-12)


def test_unsupervised_model_and_errors(cohort):
    data, _ = cohort
    m = bf.FusionModel(data.subset(split="train"), heads={}, latent_dim=2, hidden=8)
    with pytest.raises(NotFittedError):
        m.predict(data, num_samples=2)
    m.fit(max_epochs=2, progress=False)
    post = m.predict(data.subset(split="test"), num_samples=3)
    assert post.heads == {} and post.latent.shape[0] == 3
    with pytest.raises(KeyError, match="No head"):
        post.probs("subtype")
    with pytest.raises(ValueError, match="Unknown head type"):
        bf.FusionModel(data, heads={"subtype": "ordinal"})
    with pytest.raises(DataError, match="target column"):
        bf.FusionModel(data, heads={"grade": "categorical"})


def test_head_object_and_fixed_classes(cohort):
    data, _ = cohort
    train = data.subset(split="train")
    with pytest.raises(DataError, match="not among classes"):
        bf.FusionModel(train, heads={"subtype": bf.heads.Categorical(classes=["S1", "S2"])})
    m = bf.FusionModel(train, heads={"subtype": bf.heads.Categorical(classes=["S3", "S2", "S1", "S9"], weight=5.0)})
    assert m.heads["subtype"].classes == ["S3", "S2", "S1", "S9"] and m.heads["subtype"].weight == 5.0


def test_semi_supervised_unknown_labels(cohort):
    data, _ = cohort
    train = data.subset(split="train")
    t = train.targets.copy()
    t.loc[t.index[::2], "subtype"] = np.nan
    half = bf.MultiModalData.from_frames({m: train.modality(m) for m in train.modality_names}, targets=t)
    m = bf.FusionModel(half, heads={"subtype": "categorical"}, latent_dim=3, hidden=16)
    m.fit(max_epochs=3, progress=False)
    assert np.isfinite(m.history_["train_loss"]).all()


def test_two_models_do_not_share_parameters(cohort):
    data, _ = cohort
    train, test = data.subset(split="train"), data.subset(split="test")
    a = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=3, hidden=8).fit(max_epochs=3, progress=False)
    before = a.predict(test, num_samples=5, seed=0).probs("subtype")
    b = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=3, hidden=8)
    b.fit(max_epochs=3, seed=5, progress=False)
    after = a.predict(test, num_samples=5, seed=0).probs("subtype")
    assert np.array_equal(before, after)
    import pyro
    assert len(pyro.get_param_store().keys()) == 0


def test_device_auto_and_cuda_request():
    from bayesfuse._settings import resolve_device
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_cuda_fit_predict(cohort):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data, _ = cohort
    m = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"}, device="cuda")
    m.fit(max_epochs=3, progress=False)
    post = m.predict(data.subset(split="test"), num_samples=5)
    assert np.isfinite(post.probs("subtype")).all()


def test_auto_early_stopping_monitors_the_survival_head_only_when_features_outnumber_patients_twice():
    from bayesfuse.model.fusion_model import WIDE_SURVIVAL_RATIO, auto_early_stopping

    assert WIDE_SURVIVAL_RATIO == 2
    assert auto_early_stopping(200, 100, has_categorical=False, has_survival=True) == "heads"
    assert auto_early_stopping(199, 100, has_categorical=False, has_survival=True) == "elbo"   # below 2 x n
    assert auto_early_stopping(9, 1500, has_categorical=False, has_survival=True) == "elbo"    # clinical cohort
    assert auto_early_stopping(9, 1500, has_categorical=True, has_survival=True) == "heads"    # categorical head
    assert auto_early_stopping(5000, 100, has_categorical=False, has_survival=False) == "elbo"  # unsupervised
    assert auto_early_stopping(5000, 0, has_categorical=False, has_survival=True) == "elbo"
    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=120, seed=5)                     # 390 features, 120 patients
    surv = bf.heads.Survival(time="time", event="event")

    def monitor(d, **kw):
        m = bf.FusionModel(d, heads={"survival": surv}, hidden=8).fit(max_epochs=2, seed=0, progress=False, **kw)
        return m.train_config_["monitor"]

    assert monitor(data) == "heads"
    assert monitor(data.select_modalities(["protein"])) == "elbo"              # 40 features
    assert monitor(data, early_stopping="elbo") == "elbo"                      # an explicit choice is kept
    with pytest.raises(bf.exceptions.ArgumentError, match="needs a model with heads"):
        bf.FusionModel(data, hidden=8).fit(max_epochs=1, early_stopping="heads", progress=False)


def test_auto_latent_dim_is_32_only_for_survival_models_with_many_features(tmp_path):
    from bayesfuse.cli import build_parser
    from bayesfuse.model.fusion_model import BASE_LATENT_DIM, SURVIVAL_LATENT_DIM, auto_latent_dim

    assert (BASE_LATENT_DIM, SURVIVAL_LATENT_DIM) == (16, 32)
    assert auto_latent_dim(64, has_categorical=False, has_survival=True) == 32
    assert auto_latent_dim(63, has_categorical=False, has_survival=True) == 16   # clinical cohorts keep 16
    assert auto_latent_dim(400, has_categorical=True, has_survival=True) == 16   # a categorical head: 16
    assert auto_latent_dim(400, has_categorical=False, has_survival=False) == 16  # unsupervised: 16
    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=120, seed=5)                     # 390 features
    surv = bf.heads.Survival(time="time", event="event")
    assert bf.FusionModel(data, heads={"survival": surv}).latent_dim == 32
    assert bf.FusionModel(data, heads={"survival": surv, "subtype": "categorical"}).latent_dim == 16
    assert bf.FusionModel(data.select_modalities(["protein"]), heads={"survival": surv}).latent_dim == 16  # 40
    assert bf.FusionModel(data, max_features=10, heads={"survival": surv}).latent_dim == 16   # 40 after selection
    assert bf.FusionModel(data).latent_dim == 16                                           # unsupervised
    from bayesfuse.sklearn import FusionSurvival
    assert FusionSurvival().get_params()["latent_dim"] == "auto"
    assert bf.FusionModel(data, heads={"survival": surv}, latent_dim=np.int64(3)).latent_dim == 3
    for bad in (0, True, 2.5, "big"):
        with pytest.raises(bf.exceptions.ArgumentError, match="'auto' or an integer"):
            bf.FusionModel(data, latent_dim=bad)
    model = bf.FusionModel(data, heads={"survival": surv}, hidden=8).fit(max_epochs=2, seed=0, progress=False)
    model.save(tmp_path / "m")
    assert bf.FusionModel.load(tmp_path / "m").latent_dim == 32                  # saved as the resolved size
    parse = build_parser().parse_args
    assert parse(["fit", "d", "--out", "o"]).latent_dim == "auto"
    assert parse(["fit", "d", "--out", "o", "--latent-dim", "8"]).latent_dim == 8
    assert parse(["fit", "d", "--out", "o", "--latent-dim", "auto"]).latent_dim == "auto"
    with pytest.raises(SystemExit):
        parse(["fit", "d", "--out", "o", "--latent-dim", "0"])
