"""Head-weight refit given the latent guide, last-layer Bayesian encoders, their options."""

import numpy as np
import pytest
import torch
from torch import nn

import bayesfuse as bf
from bayesfuse.diagnostics.reference import compare_posteriors, fit_svi_submodel
from bayesfuse.diagnostics.vi import guide_khat, khat_threshold
from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule
from bayesfuse.module.head_refit import refit_head_posterior
from bayesfuse.nn.bayesian import BayesLinear, bayesianize, weight_draws
from bayesfuse.nn.encoders import GaussianExpertEncoder


def _softmax_data(n=150, d=2, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, c, generator=g, dtype=torch.float64) * 1.5
    y = torch.distributions.Categorical(logits=z @ w).sample()
    return z, y


def test_refit_reaches_the_posterior_and_lowers_khat():
    torch.manual_seed(0)
    z, y = _softmax_data()
    head = BayesianCategoricalHeadModule(2, 3, guide="fullrank").double()     # guide starts at sd 0.01
    before = guide_khat(head, z, y, num_samples=1000, weight=1.0)
    trace = refit_head_posterior(head, z, torch.full_like(z, 1e-9), y, steps=800, lr=0.03)
    after = guide_khat(head, z, y, num_samples=1000, weight=1.0)
    assert np.mean(trace[-50:]) < np.mean(trace[:50])                         # the objective improved
    assert before > 0.7                                                       # negative control: unfitted guide
    assert after < khat_threshold(1000)                                       # positive: a usable posterior
    # same answer as the Pyro Trace_ELBO fit of the same sub-model (validated against NUTS in tests/test_diagnostics.py)
    ref = fit_svi_submodel(z.numpy(), y.numpy(), 3, guide="fullrank", steps=1000, num_particles=4, seed=1)
    with torch.no_grad():
        a = head.posterior_q.distribution().sample((4000,)).numpy()
        b = ref.posterior_q.distribution().sample((4000,)).numpy()
    assert compare_posteriors(a, b).passed
    # negative control: the same draws shrunk 3x around their mean fail the comparison
    assert not compare_posteriors(a.mean(0) + (a - a.mean(0)) / 3, b).passed


def test_refit_uses_latent_uncertainty():
    # noisy z (wide q(z|x)) attenuates the softmax weights towards 0 (errors in variables):
    # the refit must integrate over q(z|x), not use its mean only
    torch.manual_seed(0)
    z, y = _softmax_data()
    norms = []
    for s in (1e-9, 1e-9, 1.0):
        head = BayesianCategoricalHeadModule(2, 3, guide="fullrank").double()
        refit_head_posterior(head, z, torch.full_like(z, s), y, steps=400, lr=0.03)
        w = head.posterior_q.loc.detach()[:6]                     # the (D x C) weights, biases excluded
        norms.append(float((w - w.reshape(2, 3).mean(1).repeat_interleave(3)).norm()))  # softmax-identified part
    assert abs(norms[1] - norms[0]) < 0.1 * norms[0]            # control: same setting, same answer up to MC noise
    assert norms[2] < 0.8 * norms[0]


def test_refit_validates_inputs():
    head = BayesianCategoricalHeadModule(2, 3).double()
    z = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown labels"):
        refit_head_posterior(head, z, z + 1, torch.tensor([0, 1, -1, 2]), steps=1)
    with pytest.raises(ValueError, match="must be"):
        refit_head_posterior(head, z, z[:3], torch.tensor([0, 1, 1, 2]), steps=1)


def test_bayesianize_last_layer_only():
    enc = nn.ModuleDict({"a": GaussianExpertEncoder(30, 4, hidden=8), "b": GaussianExpertEncoder(5, 4, hidden=8)})
    bayesianize(enc, 1.0, layers="last")
    for e in enc.values():
        kinds = [type(m) for m in e.net]
        assert kinds[0] is nn.Linear and kinds[-1] is BayesLinear                   # hidden layer stays a point estimate
        assert sum(k is BayesLinear for k in kinds) == 1
    full = bayesianize(nn.ModuleDict({"a": GaussianExpertEncoder(30, 4, hidden=8)}), 1.0, layers="all")
    assert sum(isinstance(m, BayesLinear) for m in full.modules()) == 2              # negative control: both layers
    with pytest.raises(ValueError, match="layers="):
        bayesianize(enc, 1.0, layers="first")
    # draws: per-draw output-layer weights shared across patients, input layer deterministic
    x = torch.randn(5, 30)
    with weight_draws(enc, 6):
        loc, _ = enc["a"](x)
    assert loc.shape == (6, 5, 4) and loc.std(0).max() > 0


@pytest.fixture(scope="module")
def sim():
    data, _ = bf.datasets.simulate(n_patients=160, latent_dim=2, seed=3)
    return data


def test_model_options_round_trip_and_refit_changes_guide(tmp_path, sim):
    tr = sim.subset(split="train")
    kw = dict(heads={"subtype": "categorical"}, latent_dim=2, hidden=16)
    fit = dict(max_epochs=6, kl_warmup_epochs=2, seed=0, progress=False)
    m = bf.FusionModel(tr, bayesian="encoders+heads", **kw).fit(**fit)
    assert m.encoder_layers == "last" and m.head_refit_steps > 0 and m.prior_scale == 1.0
    n_bayes = sum(isinstance(x, BayesLinear) for x in m.module.encoders.modules())
    assert n_bayes == len(m.modalities)
    m0 = bf.FusionModel(tr, bayesian="encoders+heads", advanced=bf.AdvancedConfig(head_refit_steps=0), **kw).fit(**fit)
    sd = m.module.heads["subtype"].posterior_q.marginal_sd().mean()
    sd0 = m0.module.heads["subtype"].posterior_q.marginal_sd().mean()
    assert sd > 3 * sd0                                  # the refit widens the under-dispersed joint-fit guide
    m.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m", device="cpu")
    assert (loaded.encoder_layers, loaded.head_refit_steps) == ("last", m.head_refit_steps)
    te = sim.subset(split="test")
    np.testing.assert_array_equal(m.predict(te, num_samples=10, seed=2).probs("subtype"),
                                  loaded.predict(te, num_samples=10, seed=2).probs("subtype"))
    with pytest.raises(ValueError, match="encoder_layers="):
        bf.FusionModel(tr, bayesian="encoders+heads", advanced=bf.AdvancedConfig(encoder_layers="first"), **kw)
    with pytest.raises(ValueError, match="head_refit_steps="):
        bf.FusionModel(tr, bayesian="heads", advanced=bf.AdvancedConfig(head_refit_steps=-1), **kw)
