"""Missing modalities and variational imputation (FusionModel.impute, Imputation, modality_weights).

The numerical core is checked on a linear-Gaussian model whose encoders and decoders are set
analytically (hidden=0, float64): with orthogonal loading rows each modality's exact likelihood
factor in z is a diagonal Gaussian, so the product of experts IS the exact posterior and the
imputation must equal the exact conditional p(x_b | x_a) (mean and covariance) up to Monte
Carlo error. Tolerances are stated per assertion (multiples of the Monte Carlo standard error).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _linear_gaussian import SIGMA, B, D, W  # tests/ helper
from _linear_gaussian import analytic_model as _lg_model
from _linear_gaussian import exact_conditional as _exact_conditional
from _linear_gaussian import simulate as _simulate

import bayesfuse as bf
from bayesfuse.exceptions import NoModalityWarning


def _analytic_model() -> bf.FusionModel:
    return _lg_model(n_fit=300)


@pytest.fixture(scope="module")
def analytic_model():
    return _analytic_model()


def test_linear_gaussian_imputation_matches_exact_conditional(analytic_model):
    frames, _ = _simulate(3, seed=7)
    data = bf.MultiModalData.from_frames({"a": frames["a"]})  # modality b absent for all 3
    S = 40_000
    imp = analytic_model.impute(data, modalities=["b"], num_samples=S, seed=3)
    draws = imp["b"]
    assert draws.shape == (S, 3, 3)
    mean, cov = _exact_conditional(frames["a"].to_numpy())
    sd = np.sqrt(np.diag(cov))
    # Mean: within 4 Monte Carlo standard errors (sd / sqrt(S)).
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), np.broadcast_to(4 * sd / np.sqrt(S), mean.shape))
    # Covariance: each entry within 4 MC standard errors of a sample covariance
    # (se(cov_ij) = sqrt((cov_ii cov_jj + cov_ij^2) / S) for Gaussian draws).
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / S)
    for n in range(3):
        np.testing.assert_array_less(np.abs(np.cov(draws[:, n].T) - cov), 4 * se)
    # Power check (negative control): the unconditional predictive N(b, W^T W + s^2 I) differs
    # from the conditional by far more than the tolerance, so a wrong posterior would fail.
    assert np.abs(mean - B["b"]).max() > 50 * sd.max() / np.sqrt(S)
    marg_var = np.diag(W["b"].T @ W["b"]) + SIGMA["b"] ** 2
    assert (marg_var - np.diag(cov) > 20 * np.sqrt(2 / S) * marg_var).all()


def test_no_modality_gives_prior_predictive(analytic_model):
    frames, _ = _simulate(4, seed=8)
    targets = pd.DataFrame(index=[*frames["a"].index, "nobody"])
    data = bf.MultiModalData.from_frames({"a": frames["a"]}, targets=targets)
    S = 40_000
    with pytest.warns(NoModalityWarning, match="prior predictive"):
        imp = analytic_model.impute(data, modalities=["a", "b"], num_samples=S, seed=4)
    assert imp.no_modality.tolist() == [False] * 4 + [True]
    # Reference: z ~ N(0, I) pushed through the true decoder with its noise.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((S, D))
    for m in ("a", "b"):
        ref = z @ W[m] + B[m] + SIGMA[m] * rng.standard_normal((S, W[m].shape[1]))
        got = imp[m][:, 4]
        sd = ref.std(0)
        np.testing.assert_array_less(np.abs(got.mean(0) - ref.mean(0)), 5 * sd * np.sqrt(2 / S))  # two MC means
        np.testing.assert_allclose(got.std(0), sd, rtol=0.03)  # 2 x 5 MC se of an sd ~ 0.035 at S=40k
        assert not imp.observed(m).loc["nobody"].any()
    # The observed patients' modality a is passed through, not drawn.
    np.testing.assert_array_equal(imp["a"][:, :4], np.broadcast_to(frames["a"].to_numpy(), (S, 4, 4)))


def test_reconstruct_reproduces_observed_within_noise(analytic_model):
    frames, _ = _simulate(200, seed=9)
    data = bf.MultiModalData.from_frames(frames)
    imp = analytic_model.impute(data, num_samples=400, seed=5, reconstruct=True)
    assert imp.reconstruct and not imp.observed("a").to_numpy().any()
    for m in W:
        x = frames[m].to_numpy()
        resid = (imp.mean(m).to_numpy() - x) / SIGMA[m]
        # Reconstruction error of the mean is within the decoder noise: E[resid^2] < 1.
        assert 0.05 < np.mean(resid**2) < 1.0
        lo, hi = imp.interval(m, 0.9)
        inside = ((x >= lo.to_numpy()) & (x <= hi.to_numpy())).mean()
        assert 0.85 < inside <= 1.0
    # Negative control: without passthrough the draws are not the observed values.
    assert not np.allclose(imp["a"][0], frames["a"].to_numpy())


@pytest.fixture(scope="module")
def trained():
    """A small model on a simulated cohort with Gaussian, Bernoulli and count modalities."""
    data, _ = bf.datasets.simulate(
        n_patients=160, latent_dim=2, n_origins=0, seed=0,
        modalities={"expr": ("gaussian", 12), "mut": ("bernoulli", 8), "rna": ("negbinom", 150)})
    data = data.with_modality("expr", data.modality("expr") * 10.0 + 100.0)  # original units != z-scores
    train = data.subset(split="train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=2, hidden=16,
                               max_features={"rna": 100}, device="cpu")
        model.fit(max_epochs=15, kl_warmup_epochs=5, seed=0, progress=False, validation_fraction=0)
    return model, data.subset(split="test")


def test_imputation_record_shapes_passthrough_and_nan_cells(trained):
    model, test = trained
    # Patient 0 loses "expr"; patient 1 gets NaN cells in "expr"; patient 2 has no modality.
    ids = list(test.sample_ids)
    expr = test.modality("expr").copy()
    expr.iloc[1, [0, 3]] = np.nan
    expr = expr.drop(index=[ids[0], ids[2]])
    mods = {"expr": expr, "mut": test.modality("mut").drop(index=[ids[2]]),
            "rna": test.modality("rna").drop(index=[ids[2]])}
    data = bf.MultiModalData.from_frames(mods, targets=test.targets)
    with pytest.warns(UserWarning) as rec:
        imp = model.impute(data, modalities=["expr", "rna"], num_samples=50, seed=0)
    msgs = " ".join(str(w.message) for w in rec)
    assert "no modality" in msgs and "feature selection" in msgs
    n = test.n_samples
    assert imp["expr"].shape == (50, n, 12) and imp["rna"].shape == (50, n, 100)
    assert list(imp.sample_ids) == ids
    assert imp.features("rna") == model.transforms["rna"].features
    assert len(imp.unmodelled_features["rna"]) == 50
    obs = imp.observed("expr")
    assert list(obs.index) == ids and list(obs.columns) == model.transforms["expr"].features
    assert not obs.loc[ids[0]].any() and not obs.loc[ids[2]].any()
    assert obs.loc[ids[1]].sum() == 10 and not obs.iloc[1, 0] and not obs.iloc[1, 3]
    assert obs.iloc[3:].to_numpy().all()
    # Passthrough: observed cells equal the raw frame (original units) in every draw.
    raw = expr.reindex(index=ids)[imp.features("expr")].to_numpy()
    got = imp["expr"]
    m = obs.to_numpy()
    np.testing.assert_array_equal(got[:, m], np.broadcast_to(raw[m], (50, m.sum())))
    # NaN cells and absent rows are drawn (they vary over draws) and finite.
    assert np.isfinite(got).all()
    assert (got[:, ~m].std(0) > 0).all()
    # Imputed values are in original units: their scale matches the raw training data, not z-scores.
    tr = model._train_data.modality("expr")[imp.features("expr")]
    mean_abs_err = np.abs(imp.mean("expr").iloc[0].to_numpy() - tr.mean().to_numpy()) / tr.std().to_numpy()
    assert mean_abs_err.max() < 3.0
    assert tr.mean().to_numpy().min() > 50  # the check above would fail in standardised units
    # Counts stay counts; absent patients use the training median library.
    rna = imp["rna"]
    assert (rna == np.round(rna)).all() and (rna >= 0).all()
    assert imp.library["rna"][2] == model.transforms["rna"].library_median
    # Frames: completed tables keep observed values and fill the rest with the posterior mean.
    frames = imp.to_frames()
    np.testing.assert_array_equal(frames["expr"].to_numpy()[m], raw[m])
    np.testing.assert_allclose(frames["expr"].to_numpy()[~m], imp.mean("expr").to_numpy()[~m])
    lo, hi = imp.interval("expr", 0.9)
    assert (lo.to_numpy() <= hi.to_numpy()).all() and lo.index.equals(obs.index)
    with pytest.raises(KeyError, match="not imputed"):
        imp["mut"]
    with pytest.raises(bf.exceptions.DataError, match="knows the modalities"):
        model.impute(data, modalities=["nope"])


def test_bernoulli_draws_and_seed(trained):
    model, test = trained
    data = test.drop_modalities(["mut"])
    a = model.impute(data, modalities="mut", num_samples=30, seed=1)
    b = model.impute(data, modalities="mut", num_samples=30, seed=1)
    assert set(np.unique(a["mut"])) <= {0.0, 1.0}
    np.testing.assert_array_equal(a["mut"], b["mut"])  # seeded: reproducible
    c = model.impute(data, modalities="mut", num_samples=30, seed=2)
    assert not np.array_equal(a["mut"], c["mut"])


def test_to_original_roundtrip_with_log1p_columns():
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"skewed": rng.lognormal(1.0, 1.2, 300), "plain": rng.normal(50, 5, 300)})
    tf = bf.data.preprocessing.ModalityTransform.fit("m", raw)
    assert tf.log1p.tolist() == [True, False]
    back = tf.to_original(tf.transform(raw).observed)
    np.testing.assert_allclose(back, raw.to_numpy(), rtol=1e-10)
    # Values far below the training range stay non-negative on log1p columns.
    assert (tf.to_original(np.array([[-50.0, -50.0]]))[:, 0] >= 0).all()
    with pytest.raises(bf.exceptions.DataError, match="last axis"):
        tf.to_original(np.zeros((2, 3)))


def test_modality_weights_and_subset_predict(trained):
    model, test = trained
    ids = list(test.sample_ids)
    data = bf.MultiModalData.from_frames(
        {"expr": test.modality("expr").drop(index=ids[:5]), "mut": test.modality("mut"),
         "rna": test.modality("rna")}, targets=test.targets)
    post = model.predict(data, num_samples=20)
    w = post.modality_weights("subtype")
    assert list(w.columns) == ["expr", "mut", "rna", "prior"] and list(w.index) == ids
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    assert (w.loc[ids[:5], "expr"] == 0).all() and (w.loc[ids[5:], "expr"] > 0).all()
    # Hand computation for one patient: expert precision summed over z dims / total precision.
    prec = post.modality_precision[6].sum(1)
    total = (1 / post.latent_scale[6] ** 2).sum()
    np.testing.assert_allclose(w.iloc[6, :3], prec / total, rtol=1e-5)
    with pytest.raises(KeyError):
        post.modality_weights("no_such_head")
    # Any subset works, including a single modality; fewer modalities -> wider posterior of z.
    full = model.predict(test, num_samples=20)
    for keep in (["expr"], ["mut"], ["rna"], ["expr", "rna"]):
        sub = model.predict(test.select_modalities(keep), num_samples=20)
        assert sub.probs("subtype").shape == full.probs("subtype").shape
        assert np.isfinite(sub.probs("subtype")).all()
        assert (sub.latent_scale >= full.latent_scale - 1e-6).all()
        assert (sub.modality_weights()[[m for m in model.modalities if m not in keep]] == 0).all().all()


@pytest.mark.realdata
def test_cll_trains_on_all_200_and_imputes_drugs(shared_data):
    if not (shared_data / "cll").is_dir():
        pytest.skip("shared dataset 'cll' not found")
    data = bf.MultiModalData.read_dir(shared_data / "cll", drop_features={"mutations": ["IGHV"]})
    assert data.n_samples == 200 and int((~data.presence["drugs"]).sum()) == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoModalityWarning)
        model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=4, hidden=32, device="cpu")
        model.fit(max_epochs=3, kl_warmup_epochs=1, validation_fraction=0, seed=0, progress=False)
    assert model.train_config_["n_train"] == 200
    imp = model.impute(data, modalities=["drugs", "mutations"], num_samples=20)
    no_drug = ~data.presence["drugs"].to_numpy()
    assert not imp.observed("drugs").to_numpy()[no_drug].any()
    assert imp.observed("drugs").to_numpy()[~no_drug].all()
    assert np.isfinite(imp["drugs"]).all()
    # Mutation NaN cells (about a third) are imputed with 0/1 draws; observed cells pass through.
    mut_obs = imp.observed("mutations").to_numpy()
    assert 0.2 < 1 - mut_obs.mean() < 0.5
    assert set(np.unique(imp["mutations"][:, ~mut_obs])) <= {0.0, 1.0}
