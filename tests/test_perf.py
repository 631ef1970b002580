"""The fast training path computes the same ELBO as Pyro's Trace_ELBO of the model/guide."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.nn import functional as F

from bayesfuse.module.batch import TensorStore
from bayesfuse.module.fused_elbo import fused_elbo_loss, has_global_head_sites
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.heads import CategoricalHeadModule
from bayesfuse.train.svi import elbo_loss

LIKS = {"g": ("gaussian", 7), "b": ("bernoulli", 5), "p": ("poisson", 6), "nb": ("negbinom", 4)}


class BayesBiasHead(CategoricalHeadModule):
    """Categorical head with a Bayesian class bias: a global Pyro sample site."""

    def __init__(self, latent_dim, n_classes):
        super().__init__(latent_dim, n_classes)
        self.q_loc = torch.nn.Parameter(torch.randn(n_classes) * 0.3)
        self.q_raw = torch.nn.Parameter(torch.zeros(n_classes))

    def model_params(self, name):
        return {"bias": pyro.sample(f"{name}_bias", dist.Normal(torch.zeros_like(self.q_loc), 1.0).to_event(1))}

    def guide_params(self, name):
        return {"bias": pyro.sample(f"{name}_bias", dist.Normal(self.q_loc, F.softplus(self.q_raw)).to_event(1))}

    def log_likelihood(self, z, target, params):
        y = target["y"]
        logp = torch.log_softmax(self.logits(z) + params["bias"], dim=-1)
        ll = logp.gather(-1, y.clamp(min=0).expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return ll * (y >= 0)


def _setup(bayes_head=False, n=40, latent=3):
    torch.manual_seed(0)
    dims = {m: f for m, (_, f) in LIKS.items()}
    head = BayesBiasHead(latent, 3) if bayes_head else CategoricalHeadModule(latent, 3, hidden=4)
    head.weight = 2.5
    module = FusionModule(dims, {m: lk for m, (lk, _) in LIKS.items()}, latent, {"y": head}, hidden=8,
                          encoder_dropout=0.2).double()
    enc, obs, mask, lib = {}, {}, {}, {}
    for m, (lk, f) in LIKS.items():
        if lk == "gaussian":
            x = torch.randn(n, f)
        elif lk == "bernoulli":
            x = torch.bernoulli(torch.full((n, f), 0.3))
        else:
            x = torch.poisson(torch.full((n, f), 4.0))
        obs[m] = x.double()
        enc[m] = torch.log1p(x.abs()).double() if lk in ("poisson", "negbinom") else x.double()
        mask[m] = torch.bernoulli(torch.full((n, f), 0.85)).double()  # missing cells
        lib[m] = obs[m].sum(1).clamp(min=1.0) if lk in ("poisson", "negbinom") else torch.ones(n, dtype=torch.float64)
    presence = torch.bernoulli(torch.full((len(LIKS), n), 0.7)).double()  # missing modalities
    presence[:, :2] = 0.0  # two patients with no modality at all
    y = torch.randint(0, 3, (n,))
    y[::5] = -1  # unknown labels
    store = TensorStore(enc, obs, mask, lib, presence, {"y": {"y": y}})
    return module, store


def _grads(module):
    return torch.cat([p.grad.reshape(-1) for p in module.parameters() if p.grad is not None])


@pytest.mark.parametrize("bayes_head", [False, True])
def test_fused_equals_trace_elbo_same_seed(bayes_head):
    module, store = _setup(bayes_head)
    module.train()  # encoder dropout on: the RNG stream must be consumed in the same order
    batch = store.batch(torch.tensor([3, 0, 17, 8, 1, 25, 39, 12, 30, 5]))
    mmask = module.random_modality_mask(batch.presence, 0.4)
    assert has_global_head_sites(module) is bayes_head
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(123)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 0.37, 1, mmask, method)
        loss.backward()
        out[method] = (loss.detach(), _grads(module))
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)
    # negative control: another seed (other dropout masks and noise) gives another loss
    torch.manual_seed(124)
    other = fused_elbo_loss(module, batch, store.n, 0.37, 1, mmask).detach()
    assert abs(float(other - out["trace"][0])) > 1e-3


def test_fused_particles_equal_vectorised_trace_elbo():
    module, store = _setup()
    module.eval()
    batch = store.batch(torch.arange(0, 40, 3))
    torch.manual_seed(5)
    ref = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(
        module.model, module.guide, batch, store.n, 0.8, None)
    torch.manual_seed(5)
    got = fused_elbo_loss(module, batch, store.n, 0.8, num_particles=4)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-9)


def test_fused_given_eps_is_deterministic_and_checks_shape():
    module, store = _setup()
    module.eval()
    batch = store.batch(torch.arange(10))
    eps = torch.randn(10, 3, dtype=torch.float64)
    a = fused_elbo_loss(module, batch, store.n, eps=eps)
    b = module(batch, store.n, eps=eps)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="eps has shape"):
        fused_elbo_loss(module, batch, store.n, eps=torch.randn(9, 3, dtype=torch.float64))


def _sim_model(n=120, **kw):
    import bayesfuse as bf

    data, _ = bf.datasets.simulate(n_patients=n, seed=1)
    return bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=4, hidden=16, device="cpu", **kw), data


def test_seeded_fit_bit_identical_and_trace_option():
    states = []
    for _ in range(2):
        model, _ = _sim_model()
        model.fit(max_epochs=6, kl_warmup_epochs=2, batch_size=32, seed=3, progress=False)
        states.append((model.history_, model.module.state_dict()))
    np.testing.assert_array_equal(states[0][0]["train_loss"], states[1][0]["train_loss"])
    for k, v in states[0][1].items():
        assert torch.equal(v, states[1][1][k]), k
    model, _ = _sim_model()
    model.fit(max_epochs=3, kl_warmup_epochs=1, batch_size=32, seed=3, progress=False, elbo="trace")
    assert np.isfinite(model.history_["train_loss"]).all()
    with pytest.raises(ValueError, match="elbo="):
        model.fit(max_epochs=1, progress=False, elbo="jit")


def test_predict_without_latent_same_probs():
    model, data = _sim_model(n=700)
    model.fit(max_epochs=2, kl_warmup_epochs=1, seed=0, progress=False)
    a = model.predict(data, num_samples=20, seed=4, batch_size=4096)  # one chunk
    b = model.predict(data, num_samples=20, seed=4, batch_size=256, return_latent=False)  # three chunks
    c = model.predict(data, num_samples=20, seed=5, batch_size=256)
    np.testing.assert_allclose(a.probs("subtype"), b.probs("subtype"), rtol=1e-6)
    assert b.latent.shape == (20, data.n_samples, 0) and b.num_samples == 20
    assert a.latent.shape == (20, data.n_samples, 4)
    assert np.abs(c.probs("subtype") - a.probs("subtype")).max() > 1e-3  # negative control: other seed


@pytest.mark.parametrize("mode", ["heads", "all", "mc_dropout"])
def test_fused_equals_trace_elbo_bayesian_module(mode):
    from bayesfuse.module.bayesian_module import BayesianFusionModule
    from bayesfuse.module.fusion_module import fused_supported

    torch.manual_seed(0)
    _, store = _setup()
    dims = {m: f for m, (_, f) in LIKS.items()}
    module = BayesianFusionModule(dims, {m: lk for m, (lk, _) in LIKS.items()}, 3,
                                  {"y": CategoricalHeadModule(3, 3)}, hidden=8, encoder_dropout=0.2,
                                  bayesian=mode).double()
    assert fused_supported(module)
    module.train()
    batch = store.batch(torch.arange(5, 25))
    mmask = module.random_modality_mask(batch.presence, 0.3)
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(99)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 0.6, 1, mmask, method)
        loss.backward()
        out[method] = (loss.detach(), _grads(module))
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("covariates", [None, ["protein"]])
def test_fused_equals_trace_elbo_survival_head(covariates):
    import bayesfuse as bf

    data, _ = bf.datasets.simulate(n_patients=80, seed=2, missing_rate=0.2)
    model = bf.FusionModel(data, heads={"subtype": "categorical",
                                        "survival": bf.heads.Survival(covariates=covariates)},
                           latent_dim=3, hidden=8, device="cpu", dtype="float64")
    store = model._store(data, strict_targets=True)
    module = model._build_module()
    assert has_global_head_sites(module)
    module.train()
    batch = store.batch(torch.arange(0, 80, 4))
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(8)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 1.0, 1, None, method)
        loss.backward()
        out[method] = (loss.detach(), _grads(module))
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)


def _has_cxx() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_step_equals_eager_step():
    from bayesfuse.train.svi import TrainConfig, compile_supported, make_loss_fn

    module, store = _setup()
    module.train()  # encoder dropout, modality dropout, missing cells and modalities, unknown labels
    config = TrainConfig(modality_dropout=0.4)
    assert compile_supported(module, config)
    idx = torch.tensor([3, 0, 17, 8, 1, 25, 39, 12, 30, 5])
    out = {}
    for compiled in (False, True):
        fn = make_loss_fn(module, store, config, compiled=compiled)
        res = []
        for seed, kl in ((123, 0.37), (7, 1.0)):   # a second KL value: a 0-d tensor input, no recompilation
            module.zero_grad()
            torch.manual_seed(seed)
            loss = fn(idx, kl)
            loss.backward()
            res.append((loss.detach(), _grads(module), torch.rand(())))   # the RNG stream is left where eager leaves it
        out[compiled] = res
    for (le, ge, re), (lc, gc, rc) in zip(out[False], out[True]):
        assert le.dtype == torch.float64
        torch.testing.assert_close(lc, le, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(gc, ge, rtol=1e-9, atol=1e-10)
        assert torch.equal(rc, re)
    assert abs(float(out[True][0][0] - out[True][1][0])) > 1e-3   # negative control: other seed, other loss


def test_compile_fallback_and_auto_rule(monkeypatch):
    import torch as _torch

    from bayesfuse.train import svi

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_torch, "compile", broken)
    model, _ = _sim_model()
    with pytest.warns(RuntimeWarning, match="compile of the training step failed"):
        model.fit(max_epochs=3, kl_warmup_epochs=1, batch_size=32, seed=3, progress=False, compile=True)
    info = model.fit_compile_
    assert info["mode"] == "always" and not info["used"] and "no compiler here" in info["reason"]
    eager, _ = _sim_model()
    eager.fit(max_epochs=3, kl_warmup_epochs=1, batch_size=32, seed=3, progress=False, compile=False)
    np.testing.assert_array_equal(model.history_["train_loss"], eager.history_["train_loss"])   # fallback = eager
    auto, _ = _sim_model()
    auto.fit(max_epochs=4, kl_warmup_epochs=1, batch_size=32, seed=3, progress=False)
    info = auto.fit_compile_
    assert info["mode"] == "auto" and not info["used"] and info["eager_epoch_seconds"] > 0
    assert "too little to amortise" in info["reason"]
    assert info["eager_epoch_seconds"] * 2 < svi.AUTO_COMPILE_MIN_SECONDS
    with pytest.raises(ValueError, match="compile="):
        auto.fit(max_epochs=1, progress=False, compile="sometimes")


@pytest.mark.slow   # a cold torch.compile: 30 s on a quiet machine, ~3 min under load
@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler")
def test_auto_compile_in_the_fit_loop_follows_the_eager_fit(monkeypatch):
    from bayesfuse.train import svi

    monkeypatch.setattr(svi, "AUTO_COMPILE_MIN_SECONDS", 0.0)   # any fit is "long enough": compile after 2 epochs
    fits = {}
    for mode in ("auto", False):
        model, _ = _sim_model(dtype="float64")
        model.fit(max_epochs=5, kl_warmup_epochs=2, batch_size=32, seed=3, progress=False, compile=mode)
        fits[mode] = model
    info = fits["auto"].fit_compile_
    assert info["compile_seconds"] > 0 and info["eager_epoch_seconds"] > 0 and info["compiled_epoch_seconds"] > 0
    # kept only if the compiled epoch was >= 3% faster than the faster eager one
    assert info["used"] == (info["compiled_epoch_seconds"] <= info["eager_epoch_seconds"] * (1 - svi.AUTO_COMPILE_MIN_GAIN))
    a, e = fits["auto"].history_["train_loss"].to_numpy(), fits[False].history_["train_loss"].to_numpy()
    np.testing.assert_array_equal(a[:2], e[:2])   # the two eager epochs, and the probe drew no random numbers
    np.testing.assert_allclose(a, e, rtol=1e-9)   # compiled epochs: the same fit up to float rounding
    assert fits[False].fit_compile_["reason"] == "compile='never'"
