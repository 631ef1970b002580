"""Direct covariate path of the survival head: ``log h_k = b_k + g(z)^T w_k + x_c^T v`` (opt-in)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from scipy import stats

import bayesfuse as bf
from bayesfuse.distributions.piecewise_hazard import censored_log_likelihood
from bayesfuse.exceptions import DataError
from bayesfuse.metrics import concordance_harrell
from bayesfuse.module.survival_head import SurvivalHeadModule
from bayesfuse.train.svi import elbo_loss

CUTS = [0.5, 1.3, 2.0]


def _head_and_inputs(covariates=True, n=30, latent=3, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = SurvivalHeadModule(latent, CUTS, baseline=[-1.0, -0.8, -0.5, -0.2],
                              covariates=["c1", "c2"] if covariates else None,
                              covariate_dims=[1, C - 1] if covariates else None).double()
    z = torch.randn(n, latent, generator=g, dtype=torch.float64)
    x = torch.randn(n, C, generator=g, dtype=torch.float64)
    params = {"b": torch.randn(4, generator=g, dtype=torch.float64) * 0.3 - 1.0,
              "w": torch.randn(latent, 4, generator=g, dtype=torch.float64) * 0.4,
              "v": torch.randn(C, generator=g, dtype=torch.float64) * 0.5}
    t = torch.rand(n, generator=g, dtype=torch.float64) * 3.0 + 0.01
    e = (torch.rand(n, generator=g, dtype=torch.float64) < 0.6).double()
    known = torch.ones(n, dtype=torch.float64)
    known[3] = 0.0
    return head, z, x, params, {"time": t, "event": e, "known": known}


def test_without_covariates_the_likelihood_is_the_latent_only_one():
    head, z, x, params, target = _head_and_inputs(covariates=False)
    assert not any("v_" in k for k in head.state_dict())           # no new parameters or sites
    ll = head.log_likelihood(z, target, {"b": params["b"], "w": params["w"]})
    ref = censored_log_likelihood(z @ params["w"] + params["b"], target["time"], target["event"], CUTS)
    ref = torch.where(target["known"] > 0, ref, torch.zeros_like(ref))
    torch.testing.assert_close(ll, ref, rtol=0, atol=0)
    # a covariate head with v = 0 is the same model
    head_c, *_ = _head_and_inputs(covariates=True)
    ll0 = head_c.log_likelihood(z, {**target, "covariates": x}, {**params, "v": torch.zeros(4, dtype=torch.float64)})
    torch.testing.assert_close(ll0, ll, rtol=0, atol=0)


def _hand_ll(z, x, params, t, e, cuts):
    """Piecewise-exponential log-likelihood in numpy, one patient at a time."""
    edges = np.concatenate([[0.0], cuts, [np.inf]])
    out = []
    for i in range(len(t)):
        log_h = params["b"] + z[i] @ params["w"] + x[i] @ params["v"]
        k_t = np.searchsorted(cuts, t[i], side="right")
        H = sum(np.exp(log_h[k]) * max(0.0, min(t[i], edges[k + 1]) - edges[k]) for k in range(len(edges) - 1))
        out.append(e[i] * log_h[k_t] - H)
    return np.array(out)


def test_likelihood_matches_hand_computation_and_exponential_ph():
    head, z, x, params, target = _head_and_inputs()
    target["known"][:] = 1.0
    ll = head.log_likelihood(z, {**target, "covariates": x}, params).numpy()
    p_np = {k: v.numpy() for k, v in params.items()}
    ref = _hand_ll(z.numpy(), x.numpy(), p_np, target["time"].numpy(), target["event"].numpy(), np.array(CUTS))
    np.testing.assert_allclose(ll, ref, rtol=1e-12, atol=1e-12)
    # K = 1 piece, no z weight: exponential proportional hazards; scipy's exponential density / survival
    exp_head = SurvivalHeadModule(3, [], covariates=["c"], covariate_dims=[4]).double()
    b0 = torch.tensor([-0.7], dtype=torch.float64)
    p1 = {"b": b0, "w": torch.zeros(3, 1, dtype=torch.float64), "v": params["v"]}
    ll1 = exp_head.log_likelihood(z, {**target, "covariates": x}, p1).numpy()
    rate = np.exp(-0.7 + x.numpy() @ params["v"].numpy())
    t, e = target["time"].numpy(), target["event"].numpy()
    ref1 = np.where(e > 0, stats.expon.logpdf(t, scale=1 / rate), stats.expon.logsf(t, scale=1 / rate))
    np.testing.assert_allclose(ll1, ref1, rtol=1e-12, atol=1e-12)


def test_gradient_in_v_matches_finite_differences():
    head, z, x, params, target = _head_and_inputs()

    def f(v):
        return head.log_likelihood(z, {**target, "covariates": x}, {**params, "v": v}).sum()

    assert torch.autograd.gradcheck(f, (params["v"].clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_missing_covariates_or_wrong_width_raise():
    head, z, x, params, target = _head_and_inputs()
    with pytest.raises(ValueError, match="covariates="):
        head.log_likelihood(z, target, params)
    with pytest.raises(ValueError, match="expects 4"):
        head.predict(z, params, covariates=x[:, :3])


# ------------------------------------------------------------------ through the FusionModel
def _sim_model(covariates=("protein",), n=80, effect="proportional"):
    data, _ = bf.datasets.simulate(n_patients=n, seed=2, missing_rate=0.2)
    spec = bf.heads.Survival(covariates=list(covariates) or None, covariate_effect=effect)
    model = bf.FusionModel(data, heads={"subtype": "categorical", "survival": spec},
                           latent_dim=3, hidden=8, device="cpu", dtype="float64")
    return data, model


@pytest.mark.parametrize(("masked", "effect"), [(False, "proportional"), (True, "proportional"),
                                                (True, "piecewise")])
def test_fused_elbo_equals_trace_elbo_with_covariates(masked, effect):
    data, model = _sim_model(effect=effect)
    store = model._store(data, strict_targets=True)
    module = model._build_module()
    module.train()
    batch = store.batch(torch.arange(0, 80, 2))
    assert (batch.presence[module.modalities.index("protein")] == 0).any()   # some patients lack the covariates
    torch.manual_seed(3)
    mask = module.random_modality_mask(batch.presence, 0.5) if masked else None
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(8)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 0.7, 1, mask, method)
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in module.parameters() if p.grad is not None])
        out[method] = (loss.detach(), grads, module.heads["survival"].v_loc.grad.clone())
    assert out["fused"][2].abs().max() > 0          # v receives a gradient
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)


def test_absent_or_masked_covariates_use_the_decoder_mean():
    data, model = _sim_model()
    store = model._store(data, strict_targets=True)
    module = model._build_module().eval()
    batch = store.full()
    i = module.modalities.index("protein")
    absent = batch.presence[i] == 0
    assert absent.any() and (~absent).any()
    torch.manual_seed(0)
    z = torch.randn(3, batch.size, 3, dtype=torch.float64)
    loc = module.decoders["protein"](z)["loc"]                              # (S, N, F)
    x = module.head_covariates("survival", batch, z)                         # prediction path
    torch.testing.assert_close(x[:, absent], loc[:, absent], rtol=0, atol=0)
    torch.testing.assert_close(x[:, ~absent], batch.encoder_input["protein"][~absent].expand(3, -1, -1),
                               rtol=0, atol=0)
    # a missing cell inside a present modality: the decoder mean of that cell only
    cm = batch.cell_mask["protein"].clone()
    row = int(torch.nonzero(~absent)[0])
    cm[row, 1] = 0.0
    batch.cell_mask = {**batch.cell_mask, "protein": cm}
    x2 = module.head_covariates("survival", batch, z)
    assert torch.equal(x2[:, row, 1], loc[:, row, 1])
    assert torch.equal(x2[:, row, 0], batch.encoder_input["protein"][row, 0].expand(3))
    # modality dropout hides the covariates where it hides the encoder
    mask = torch.ones_like(batch.presence)
    mask[i, row] = 0.0
    x3 = module.head_covariates("survival", batch, z, modality_mask=mask)
    assert torch.equal(x3[:, row], loc[:, row])
    # predict on patients without the modality: the same fill (log-hazard = b + z w + E[x|z] v)
    model.module = module
    with pytest.warns(bf.exceptions.NoModalityWarning):   # a patient who had protein only is left with none
        post = model.predict(data.drop_modalities(["protein"]), num_samples=4, seed=1)
    post_full = model.predict(data, num_samples=4, seed=1)
    lh = post.draws["survival"]["log_hazard"]
    assert np.isfinite(lh).all() and not np.allclose(lh, post_full.draws["survival"]["log_hazard"])


def test_bad_covariate_names_are_refused():
    data, _ = bf.datasets.simulate(n_patients=60, seed=1)
    with pytest.raises(DataError, match=r"unknown modalities \['clinical'\].*expression"):
        bf.FusionModel(data, heads={"s": bf.heads.Survival(covariates=["clinical"])}, device="cpu")
    with pytest.raises(DataError, match="Gaussian"):
        bf.FusionModel(data, heads={"s": bf.heads.Survival(covariates=["mutation"])}, device="cpu")
    with pytest.raises(ValueError, match="distinct modality names"):
        bf.heads.Survival(covariates=["protein", "protein"])
    assert bf.heads.Survival(covariates="protein").covariates == ["protein"]


# ------------------------------------------------------------------ positive control
def _direct_hazard_cohort(n, seed, effect=1.2):
    """Omics (60 features of a 4-d latent) unrelated to survival; hazard = exp(effect * age)."""
    rs = np.random.RandomState(seed)
    u = rs.randn(n, 4)
    omics = u @ rs.randn(4, 60) * 1.5 + rs.randn(n, 60) * 0.5
    age, noise = rs.randn(n), rs.randn(n)
    risk = effect * age
    t_ev = rs.exponential(1.0 / (0.1 * np.exp(risk)))
    t_c = rs.exponential(15.0, n)
    ids = [f"p{i}" for i in range(n)]
    mods = {"omics": pd.DataFrame(omics, index=ids).add_prefix("g"),
            "clinical": pd.DataFrame({"age": age, "noise": noise}, index=ids)}
    tg = pd.DataFrame({"time": np.minimum(t_ev, t_c), "event": (t_ev <= t_c).astype(int)}, index=ids)
    return bf.MultiModalData.from_frames(mods, targets=tg), risk


def test_positive_control_direct_covariate_hazard():
    data, risk = _direct_hazard_cohort(700, seed=5)
    train, test = data.subset(ids=data.sample_ids[:450]), data.subset(ids=data.sample_ids[450:])
    t, e = test.targets["time"].to_numpy(), test.targets["event"].to_numpy().astype(bool)
    c = {}
    for label, cov in (("default", None), ("cov", ["clinical"])):
        m = bf.FusionModel(train, heads={"s": bf.heads.Survival(n_intervals=6, weight=10.0, covariates=cov)},
                           latent_dim=2, hidden=32, device="cpu", dtype="float32")
        m.fit(max_epochs=60, patience=15, kl_warmup_epochs=10, seed=0, progress=False)
        post = m.predict(test, num_samples=100, seed=0)
        c[label] = concordance_harrell(t, e, -post.restricted_mean_survival("s", float(np.median(t))).mean(0))
        if cov:
            v = m.module.heads["s"].v_loc.detach().numpy()
    oracle = concordance_harrell(t, e, risk[450:])
    assert c["cov"] >= c["default"] + 0.02, c
    assert c["cov"] >= oracle - 0.03, (c, oracle)
    # negative control inside the same fit: the pure-noise covariate gets a small weight
    assert v[0] > 0.2 and abs(v[1]) < 0.25 * v[0], v


# ------------------------------------------------------------------ persistence, ensemble
def test_save_load_round_trip_and_old_configs(tmp_path):
    data, model = _sim_model()
    model.fit(max_epochs=3, progress=False, seed=0)
    path = model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(path, device="cpu")
    assert loaded.heads["survival"].covariates == ["protein"]
    a = model.predict(data, num_samples=5, seed=3).draws["survival"]["log_hazard"]
    b = loaded.predict(data, num_samples=5, seed=3).draws["survival"]["log_hazard"]
    np.testing.assert_array_equal(a, b)
    # a model saved before the field existed (no covariates keys in the head config) still loads
    data0, model0 = _sim_model(covariates=())
    model0.fit(max_epochs=2, progress=False, seed=0)
    p0 = model0.save(tmp_path / "old")
    cfg = json.loads((p0 / "config.json").read_text())
    for h in cfg["heads"].values():
        h.pop("covariates", None)
        h.pop("covariate_dims", None)
    (p0 / "config.json").write_text(json.dumps(cfg))
    old = bf.FusionModel.load(p0, device="cpu")
    assert old.heads["survival"].covariates is None
    np.testing.assert_array_equal(model0.predict(data0, num_samples=4, seed=2).draws["survival"]["log_hazard"],
                                  old.predict(data0, num_samples=4, seed=2).draws["survival"]["log_hazard"])


def test_deep_ensemble_with_covariates():
    data, _ = bf.datasets.simulate(n_patients=60, seed=4)
    ens = bf.DeepEnsemble(data, K=2, heads={"s": bf.heads.Survival(covariates=["expression"])},
                          latent_dim=2, hidden=8, device="cpu")
    ens.fit(max_epochs=3, progress=False)
    lh = ens.predict(data, num_samples=6).draws["s"]["log_hazard"]
    assert lh.shape[:2] == (6, 60) and np.isfinite(lh).all()


def test_piecewise_covariate_effect_matches_hand_computation():
    _, z, x, params, target = _head_and_inputs()
    head = SurvivalHeadModule(3, CUTS, covariates=["c"], covariate_dims=[4], covariate_effect="piecewise").double()
    g = torch.Generator().manual_seed(4)
    v = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.4             # (C, K)
    target["known"][:] = 1.0
    ll = head.log_likelihood(z, {**target, "covariates": x}, {**params, "v": v}).numpy()
    edges = np.concatenate([[0.0], CUTS, [np.inf]])
    t, e = target["time"].numpy(), target["event"].numpy()
    for i in range(len(t)):
        log_h = params["b"].numpy() + z[i].numpy() @ params["w"].numpy() + x[i].numpy() @ v.numpy()
        H = sum(np.exp(log_h[k]) * max(0.0, min(t[i], edges[k + 1]) - edges[k]) for k in range(4))
        assert ll[i] == pytest.approx(e[i] * log_h[np.searchsorted(CUTS, t[i], side="right")] - H, rel=1e-12)
    # its prior is the random walk of w: sd a_v for the first piece, smoothness * a_v for the increments
    a_v = min(1.0, 2.0 / np.sqrt(4))
    np.testing.assert_allclose(head.v_prior_scale_[:, 0].numpy(), a_v)
    np.testing.assert_allclose(head.v_prior_scale_[:, 1:].numpy(), 0.5 * a_v)
    with pytest.raises(ValueError, match="covariate_effect"):
        bf.heads.Survival(covariates=["c"], covariate_effect="cox")


def test_select_survival_head_can_choose_covariates():
    data, _ = bf.datasets.simulate(n_patients=90, seed=6)
    sel = bf.evaluation.select_survival_head(
        data, heads={"survival": bf.heads.Survival()}, candidates=[{}, {"covariates": ["protein"]}], n_splits=1,
        model_kwargs={"latent_dim": 2, "hidden": 8, "device": "cpu"}, fit_kwargs={"max_epochs": 3}, num_samples=20)
    assert sorted(sel.table["config"].unique()) == ["{'covariates': ['protein']}", "{}"]
    assert sel.head.covariates == sel.best.get("covariates")
