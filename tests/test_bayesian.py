"""Weight uncertainty: Bayesian layers, shared draws, decomposition, persistence, baselines."""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import bayesfuse as bf
from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule
from bayesfuse.nn.bayesian import BayesLinear, WeightPosterior, weight_draws


def test_bayeslinear_kl_matches_torch():
    layer = BayesLinear(5, 3, prior_scale=0.7).double()
    with torch.no_grad():
        layer.weight_log_scale.uniform_(-2, 0.5)
        layer.bias_log_scale.uniform_(-2, 0.5)
        layer.bias_loc.normal_()
    ref = (kl_divergence(Normal(layer.weight_loc, layer.weight_log_scale.exp()), Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))).sum()
           + kl_divergence(Normal(layer.bias_loc, layer.bias_log_scale.exp()), Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))).sum())
    torch.testing.assert_close(layer.kl(), ref, rtol=1e-12, atol=1e-12)
    # negative control: a different prior scale gives a different KL
    other = BayesLinear(5, 3, prior_scale=1.0).double()
    other.load_state_dict(layer.state_dict())
    assert abs(float(other.kl().detach() - ref.detach())) > 1e-3


def test_local_reparameterisation_matches_weight_sampling():
    torch.manual_seed(1)
    layer = BayesLinear(4, 2).double()
    with torch.no_grad():
        layer.weight_log_scale.uniform_(-1.5, -0.5)
        layer.bias_log_scale.fill_(-1.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    S = 40000
    lrt = torch.stack([layer(x) for _ in range(200)])                    # 200 x (3, 2), local reparam
    lrt = torch.cat([lrt, layer(x.expand(S, 3, 4).reshape(-1, 4)).reshape(S, 3, 2)])
    with weight_draws(layer, S):
        mc = layer(x)                                                      # (S, 3, 2), sampled weights
    mean = x @ layer.weight_loc + layer.bias_loc
    var = x.square() @ (2 * layer.weight_log_scale).exp() + (2 * layer.bias_log_scale).exp()
    for draws in (lrt, mc):
        se = (var / draws.shape[0]).sqrt()
        assert ((draws.mean(0) - mean).abs() < 5 * se).all()
        torch.testing.assert_close(draws.var(0), var, rtol=0.05, atol=0)
    # negative control: dropping the bias variance is detected
    assert not torch.allclose(mc.var(0), x.square() @ (2 * layer.weight_log_scale).exp(), rtol=0.05)


@pytest.fixture(scope="module")
def sim():
    data, _ = bf.datasets.simulate(n_patients=160, latent_dim=2, seed=3)
    return data


def _fit(data, mode, **kw):
    torch.manual_seed(0)
    m = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"}, latent_dim=2, hidden=16,
                       bayesian=mode, **kw)
    return m.fit(max_epochs=6, kl_warmup_epochs=2, seed=0, progress=False)


@pytest.fixture(scope="module")
def bayes_model(sim):
    return _fit(sim, "encoders+heads")


def test_encoder_weights_shared_across_patients_and_chunks(sim, bayes_model):
    module = bayes_model.module
    te = sim.subset(split="test")
    store = bayes_model._store(te, strict_targets=False)
    a, b = store.batch(torch.tensor([0, 1, 2])), store.batch(torch.tensor([2]))
    with module.prediction_draws(7):
        la, _, _ = module.posterior_draws(a)
        lb, _, _ = module.posterior_draws(b)             # a later chunk reuses the same weight draws
    assert la.shape == (7, 3, 2)
    torch.testing.assert_close(la[:, 2], lb[:, 0], rtol=0, atol=1e-6)  # float32 rounding differs with batch size
    assert la[:, 2].std(0).max() > 0                      # draws differ from each other
    with module.prediction_draws(7):                      # a fresh context = fresh weights (negative control)
        lc, _, _ = module.posterior_draws(b)
    assert not torch.equal(lc[:, 0], lb[:, 0])


def test_head_weight_draws_shared_within_draw():
    head = BayesianCategoricalHeadModule(3, 4, guide="fullrank").double()
    params = head.draw_params(5)
    assert params["theta"].shape == (5, head.n_params)
    z = torch.randn(1, 1, 3, dtype=torch.float64).expand(5, 6, 3)   # same z for 6 patients in every draw
    p = head.predict(z, params)["probs"]
    assert p.shape == (5, 6, 4)
    torch.testing.assert_close(p, p[:, :1].expand_as(p))            # same weights for every patient of a draw
    assert (p[0, 0] - p[1, 0]).abs().max() > 1e-6                   # different weights across draws


def test_uncertainty_identity_and_inference_data(sim, bayes_model):
    post = bayes_model.predict(sim.subset(split="test"), num_samples=50)
    u = post.uncertainty("subtype")
    assert list(u.columns) == ["total", "aleatoric", "epistemic"] and len(u) == post.n_patients
    np.testing.assert_allclose(u["total"], u["aleatoric"] + u["epistemic"], atol=1e-9)
    assert (u["epistemic"] >= 0).all() and u["epistemic"].max() > 0
    p = post.probs("subtype").astype(float)
    ent = -(p.mean(0) * np.log(p.mean(0))).sum(-1)
    np.testing.assert_allclose(u["total"], ent, rtol=1e-5)
    idata = post.to_inference_data()
    np.testing.assert_allclose(idata.constant_data["subtype_entropy_epistemic"].values, u["epistemic"])


@pytest.mark.parametrize("mode", ["encoders+heads", "mc_dropout"])
def test_save_load_identical_draws(tmp_path, sim, mode, bayes_model):
    model = bayes_model if mode == "encoders+heads" else _fit(sim, mode)
    te = sim.subset(split="test")
    model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m", device="cpu")
    assert loaded.bayesian == mode
    a, b = model.predict(te, num_samples=20, seed=4), loaded.predict(te, num_samples=20, seed=4)
    np.testing.assert_array_equal(a.probs("subtype"), b.probs("subtype"))
    c = model.predict(te, num_samples=20, seed=5)
    assert not np.array_equal(a.probs("subtype"), c.probs("subtype"))


def test_modes_train_and_report_diagnostics(sim):
    m = _fit(sim, "heads")
    assert m.diagnostics_ is not None
    row = m.diagnostics_.summary().iloc[0]
    assert row["head"] == "subtype" and row["guide"] == "fullrank" and np.isfinite(row["khat"])
    assert row["threshold"] == pytest.approx(min(1 - 1 / np.log10(2000), 0.7))
    assert _fit(sim, "none").diagnostics_ is None
    post = _fit(sim, "all").predict(sim.subset(split="test"), num_samples=10)
    assert np.isfinite(post.probs("subtype")).all()


def test_invalid_arguments(sim):
    tr = sim.subset(split="train")
    with pytest.raises(ValueError, match="bayesian="):
        bf.FusionModel(tr, bayesian="yes")
    with pytest.raises(ValueError, match="head_guide="):
        bf.FusionModel(tr, advanced=bf.AdvancedConfig(head_guide="diag"))
    with pytest.raises(ValueError, match="encoder_dropout > 0"):
        bf.FusionModel(tr, heads={"subtype": "categorical"}, bayesian="mc_dropout", encoder_dropout=0.0).fit(
            max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="family"):
        WeightPosterior(3, "diag")


def test_deep_ensemble_pools_members(sim):
    ens = bf.DeepEnsemble(sim.subset(split="train"), K=2, heads={"subtype": "categorical"}, latent_dim=2, hidden=16)
    ens.fit(seed=0, max_epochs=4, kl_warmup_epochs=2, progress=False)
    te = sim.subset(split="test")
    post = ens.predict(te, num_samples=10)
    assert post.probs("subtype").shape[0] == 10
    m0 = ens.members_[0].predict(te, num_samples=5, seed=0).probs("subtype")
    np.testing.assert_array_equal(post.probs("subtype")[:5], m0)
    assert not np.array_equal(post.probs("subtype")[5:], m0)
    with pytest.raises(ValueError, match="at least 2"):
        bf.DeepEnsemble(sim.subset(split="train"), K=1)
