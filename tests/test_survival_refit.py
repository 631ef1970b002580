"""Post-fit refit of the survival head's parameter posterior (bayesfuse/module/survival_refit.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pyro import poutine
from safetensors.torch import load_file, save_file

import bayesfuse as bf
from bayesfuse.module.survival_head import SurvivalHeadModule
from bayesfuse.module.survival_refit import refit_module_survival_heads, refit_survival_head_posterior

D64 = torch.float64


def _exp_cohort(n, rate=0.5, censor=4.0, seed=0):
    """Exponential event times (rate ``rate``) with uniform(0, censor) censoring, float64."""
    g = torch.Generator().manual_seed(seed)
    t_ev = torch.empty(n, dtype=D64).exponential_(rate, generator=g)
    t_c = torch.rand(n, dtype=D64, generator=g) * censor
    t = torch.minimum(t_ev, t_c)
    e = (t_ev <= t_c).to(D64)
    return {"time": t, "event": e, "known": torch.ones(n, dtype=D64)}


def _exact_log_rate_posterior(tgt, prior_loc, prior_sd):
    """Posterior mean and sd of b = log(rate) of a one-piece exponential by quadrature (exact reference)."""
    d, T = float(tgt["event"].sum()), float(tgt["time"].sum())
    b = np.linspace(prior_loc - 8, prior_loc + 8, 200001)
    logp = -0.5 * ((b - prior_loc) / prior_sd) ** 2 + d * b - np.exp(b) * T
    p = np.exp(logp - logp.max())
    p /= p.sum()
    mean = float((b * p).sum())
    return mean, float(np.sqrt(((b - mean) ** 2 * p).sum())), float(b[np.argmax(logp)])


def _one_piece_head():
    # cuts=[] -> one piece; g(z) = z (D = 1); z = 0 -> w carries no information, b is the log-rate
    return SurvivalHeadModule(1, [], baseline=[np.log(0.3)]).double()


def _b_moments(head):
    b = head.draw_params(20000)["b"][:, 0]
    return float(b.mean()), float(b.std())


def test_positive_control_one_piece_exponential_matches_exact_posterior():
    tgt = _exp_cohort(400, seed=1)
    assert 150 < tgt["event"].sum() < 300
    head = _one_piece_head()
    mean, sd, mode = _exact_log_rate_posterior(tgt, float(head.b_prior_loc[0]), float(head.b_prior_scale[0]))
    z = torch.zeros(400, 1, dtype=D64)
    torch.manual_seed(0)
    refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, center="mode")   # z known (scale 0)
    assert head.has_fullrank_posterior
    m_hat, sd_hat = float(head.post_loc[0]), float(head.post_tril[0, 0])
    assert abs(m_hat - mode) < 1e-3 * sd, (m_hat, mode)                      # the Laplace centre is the mode
    assert abs(m_hat - mean) < 0.06 * sd, (m_hat, mean, sd)                   # mean - mode: skew of log-rate
    assert abs(sd_hat / sd - 1) < 0.03, (sd_hat, sd)
    torch.manual_seed(1)
    m_draw, sd_draw = _b_moments(head)                                       # what predict uses
    assert abs(m_draw - mean) < 0.08 * sd and abs(sd_draw / sd - 1) < 0.05
    # w: no information in the data (z = 0) -> its prior
    assert abs(float(head.post_tril[1, 1]) / float(head.w_prior_scale_[0, 0]) - 1) < 1e-6


def test_negative_control_unrefitted_guide_fails_the_same_check():
    tgt = _exp_cohort(400, seed=1)
    head = _one_piece_head()
    mean, sd, _ = _exact_log_rate_posterior(tgt, float(head.b_prior_loc[0]), float(head.b_prior_scale[0]))
    torch.manual_seed(1)
    m_draw, sd_draw = _b_moments(head)                                        # guide at its initial sd 0.02
    assert not abs(sd_draw / sd - 1) < 0.05, (sd_draw, sd)
    assert not abs(m_draw - mean) < 0.08 * sd, (m_draw, mean)
    assert sd_draw < 0.5 * sd


def test_fitted_centre_keeps_the_trained_mean_and_takes_the_hessian_there():
    tgt = _exp_cohort(400, seed=1)
    head = _one_piece_head()
    with torch.no_grad():
        head.b_loc.fill_(-0.9)                     # a "trained" guide mean, not the mode
    z = torch.zeros(400, 1, dtype=D64)
    refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt)             # default centre: fitted
    assert float(head.post_loc[0]) == -0.9
    # -d^2/db^2 [log N(b; m, s^2) + d b - e^b T] = 1 / s^2 + e^b T
    prec = 1 / float(head.b_prior_scale[0]) ** 2 + np.exp(-0.9) * float(tgt["time"].sum())
    assert abs(float(head.post_tril[0, 0]) * np.sqrt(prec) - 1) < 1e-8
    with pytest.raises(ValueError, match="center"):
        refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, center="mean")


def test_meanfield_refit_is_exact_for_one_piece_but_laplace_is_the_default():
    tgt = _exp_cohort(400, seed=1)
    head = _one_piece_head()
    mean, sd, _ = _exact_log_rate_posterior(tgt, float(head.b_prior_loc[0]), float(head.b_prior_scale[0]))
    z = torch.zeros(400, 1, dtype=D64)
    torch.manual_seed(0)
    trace = refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, steps=800, family="meanfield")
    assert not head.has_fullrank_posterior and trace[-1] < trace[0]
    b_sd = float(torch.nn.functional.softplus(head.b_raw_scale.detach()[0]))
    assert abs(float(head.b_loc.detach()[0]) - mean) < 0.2 * sd and abs(b_sd / sd - 1) < 0.15, (head.b_loc, b_sd, mean, sd)
    with pytest.raises(ValueError, match="family"):
        refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, family="nuts")


def _three_piece_sd(n, seed):
    head = SurvivalHeadModule(1, [1.0, 2.0], baseline=[np.log(0.5)] * 3).double()
    tgt = _exp_cohort(n, rate=0.5, censor=3.0, seed=seed)
    z = torch.zeros(n, 1, dtype=D64)
    refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, center="mode")
    L = torch.tril(torch.ones(3, 3, dtype=D64))
    cov = L @ (head.post_tril @ head.post_tril.T)[:3, :3] @ L.T
    return head, torch.diagonal(cov).sqrt(), tgt


def test_refit_sd_shrinks_with_events_and_the_band_widens_where_data_are_thin():
    torch.manual_seed(0)
    head_s, sd_small, _ = _three_piece_sd(300, seed=2)
    head_l, sd_large, _ = _three_piece_sd(2400, seed=3)
    ratio = (sd_small / sd_large).numpy()
    # 8x the events: sd / sqrt(8) = / 2.83 (the random-walk prior pulls a little towards 1)
    assert ((ratio > 2.2) & (ratio < 3.2)).all(), ratio
    # the un-refitted guide would not have moved at all (same initial sd for both cohorts)
    h0 = SurvivalHeadModule(1, [1.0, 2.0], baseline=[np.log(0.5)] * 3).double()
    assert torch.equal(h0.flat_guide()[1], SurvivalHeadModule(1, [1.0, 2.0]).double().flat_guide()[1])
    # thin data late (uniform(0, 3) censoring leaves few at risk after t = 2): wider band of S(t)
    t, e = _exp_cohort(300, 0.5, 3.0, 2)["time"], _exp_cohort(300, 0.5, 3.0, 2)["event"]
    events = [int(((t >= lo) & (t < hi) & (e > 0)).sum()) for lo, hi in ((0, 1), (2, 3))]
    assert events[0] > 3 * events[1], events
    assert sd_small[2] > 1.5 * sd_small[0], sd_small
    torch.manual_seed(1)
    p = head_s.draw_params(4000)
    log_h = head_s.log_hazard(torch.zeros(4000, 1, 1, dtype=D64), p)[:, 0]    # (S, K)
    width = torch.tensor([1.0, 1.0, 1.0], dtype=D64)
    H = lambda t: (log_h.exp() * torch.clamp(t - torch.tensor([0.0, 1.0, 2.0], dtype=D64), 0) .clamp(max=width)).sum(-1)  # noqa: E731
    # relative band width of S(t) = exp(-H): sd of log H grows where fewer events inform it
    sd_early, sd_late = float(H(0.9).log().std()), float((H(2.9) - H(2.0)).log().std())
    assert sd_late > 1.5 * sd_early, (sd_early, sd_late)


def test_covariates_are_refitted_and_match_the_fisher_information():
    # one piece, z = 0, hazard = 0.3 exp(0.8 x): the posterior of v centres on 0.8 with sd ~ 1 / sqrt(I)
    n = 1500
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 1, dtype=D64, generator=g)
    rate = 0.3 * torch.exp(0.8 * x[:, 0])
    t_ev = torch.empty(n, dtype=D64).exponential_(1.0, generator=g) / rate
    t_c = torch.rand(n, dtype=D64, generator=g) * 6
    tgt = {"time": torch.minimum(t_ev, t_c), "event": (t_ev <= t_c).to(D64), "known": torch.ones(n, dtype=D64),
           "covariates": x}
    head = SurvivalHeadModule(1, [], baseline=[np.log(0.3)], covariates=["c"], covariate_dims=[1]).double()
    z = torch.zeros(n, 1, dtype=D64)
    torch.manual_seed(0)
    refit_survival_head_posterior(head, z, torch.zeros_like(z), tgt, center="mode")
    v_mean = float(head.post_loc[-1])
    cov = head.post_tril @ head.post_tril.T
    v_sd = float(cov[-1, -1].sqrt())
    # observed information of (b, v) at the truth, marginal sd of v
    w = rate * tgt["time"]
    info = torch.stack([torch.stack([w.sum(), (w * x[:, 0]).sum()]),
                        torch.stack([(w * x[:, 0]).sum(), (w * x[:, 0] ** 2).sum()])])
    fisher_sd = float(torch.linalg.inv(info)[1, 1].sqrt())
    assert abs(v_mean - 0.8) < 3 * fisher_sd, (v_mean, fisher_sd)
    assert 0.8 < v_sd / fisher_sd < 1.25, (v_sd, fisher_sd)
    # the drawn v is used by the likelihood: log h = b + x v
    p = head.draw_params(3)
    lh = head.log_hazard(z[:2], p, covariates=x[:2])
    torch.testing.assert_close(lh[..., 0], (p["b"][:, :1] + x[:2, 0] * p["v"][:, :1]))


def test_all_censored_data_give_finite_wide_posterior():
    tgt = _exp_cohort(200, seed=5)
    tgt["event"] = torch.zeros_like(tgt["event"])
    head = SurvivalHeadModule(2, [1.0, 2.0], baseline=[np.log(0.1)] * 3).double()
    z = torch.randn(200, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    trace = refit_survival_head_posterior(head, z, 0.1 * torch.ones_like(z), tgt, center="mode")
    assert np.isfinite(trace).all() and len(trace) > 1
    assert torch.isfinite(head.post_loc).all() and torch.isfinite(head.post_tril).all()
    p = head.draw_params(50)
    assert all(torch.isfinite(v).all() for v in p.values())
    assert float(head.post_loc[0]) < float(head.b_prior_loc[0])     # no events: the rate moves down


def test_fullrank_guide_sites_are_the_stored_gaussian():
    head = SurvivalHeadModule(2, [1.0], covariates=["c"], covariate_dims=[2], covariate_effect="piecewise").double()
    T = head.n_flat
    g = torch.Generator().manual_seed(0)
    A = torch.randn(T, T, dtype=D64, generator=g) * 0.1
    L = torch.linalg.cholesky(A @ A.T + 0.05 * torch.eye(T, dtype=D64))
    loc = torch.randn(T, dtype=D64, generator=g)
    head.set_fullrank_posterior(loc, L)
    tr = poutine.trace(lambda: head.guide_params("s")).get_trace()
    tr.compute_log_prob()
    flat = torch.cat([tr.nodes[f"s.{k}"]["value"].reshape(-1) for k in ("b_incr", "w_incr", "v_incr")])
    lp = sum(site["log_prob_sum"] for site in tr.nodes.values() if site["type"] == "sample")
    ref = torch.distributions.MultivariateNormal(loc, scale_tril=L).log_prob(flat)
    torch.testing.assert_close(lp, ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="increments"):
        head.set_fullrank_posterior(loc[:-1], L)


# ------------------------------------------------------------------ through the FusionModel
def _sim(n=90, covariates=None):
    data, _ = bf.datasets.simulate(n_patients=n, seed=2, missing_rate=0.2)
    spec = bf.heads.Survival(n_intervals=4, covariates=covariates)
    return data, spec


@pytest.mark.parametrize("bayesian", ["none", "heads"])
def test_fusion_model_runs_the_refit_in_every_mode_with_covariates(bayesian):
    data, spec = _sim(covariates=["protein"])
    model = bf.FusionModel(data, heads={"subtype": "categorical", "survival": spec}, latent_dim=3, hidden=8,
                           device="cpu", dtype="float64", bayesian=bayesian,
                           advanced=bf.AdvancedConfig(head_refit_steps=20, survival_refit="laplace"))
    model.fit(max_epochs=3, progress=False, seed=0)
    head = model.module.heads["survival"]
    assert head.has_fullrank_posterior and head.post_loc.numel() == head.n_flat
    assert head.n_covariates > 0
    sd = torch.diagonal(head.post_tril @ head.post_tril.T).sqrt()
    assert (sd[:head.n_pieces] > 0.05).all()            # far from the 0.02 the joint fit leaves
    post = model.predict(data, num_samples=6, seed=0)
    assert np.isfinite(post.draws["survival"]["log_hazard"]).all()
    # on by default; "none" keeps the joint fit's mean-field guide
    default = bf.FusionModel(data, heads={"survival": spec}, latent_dim=3, hidden=8, device="cpu", dtype="float64")
    assert default.survival_refit == "laplace"
    plain = bf.FusionModel(data, heads={"survival": spec}, latent_dim=3, hidden=8, device="cpu", dtype="float64",
                           advanced=bf.AdvancedConfig(survival_refit="none"))
    plain.fit(max_epochs=2, progress=False, seed=0)
    assert not plain.module.heads["survival"].has_fullrank_posterior
    with pytest.raises(ValueError, match="survival_refit"):
        bf.FusionModel(data, heads={"survival": spec}, device="cpu", advanced=bf.AdvancedConfig(survival_refit="yes"))


def test_refit_module_uses_decoder_mean_for_absent_covariates():
    data, spec = _sim(covariates=["protein"])
    model = bf.FusionModel(data, heads={"survival": spec}, latent_dim=3, hidden=8, device="cpu", dtype="float64")
    model.fit(max_epochs=2, progress=False, seed=0)
    store = model._store(data, strict_targets=True)
    i = model.module.modalities.index("protein")
    assert (store.presence[i] == 0).any()
    seen = []
    orig = model.module.head_target

    def spy(h, batch, z, *a, **k):
        out = orig(h, batch, z, *a, **k)
        seen.append((batch, z, out["covariates"]))
        return out

    model.module.head_target = spy
    torch.manual_seed(0)
    refit_module_survival_heads(model.module, store, steps=5)
    batch, z, x = seen[0]
    absent = batch.presence[i] == 0
    loc = model.module.decoders["protein"](z)["loc"]
    torch.testing.assert_close(x[:, absent], loc[:, absent], rtol=0, atol=0)
    assert z.shape[0] >= 32 and x.shape[:2] == z.shape[:2]


def test_save_load_round_trip_and_old_saves(tmp_path):
    data, spec = _sim()
    model = bf.FusionModel(data, heads={"survival": spec}, latent_dim=3, hidden=8, device="cpu", dtype="float64",
                           advanced=bf.AdvancedConfig(survival_refit="laplace_mode"))
    model.fit(max_epochs=3, progress=False, seed=0)
    path = model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(path, device="cpu")
    assert loaded.survival_refit == "laplace_mode" and loaded.module.heads["survival"].has_fullrank_posterior
    a = model.predict(data, num_samples=5, seed=3).draws["survival"]["log_hazard"]
    b = loaded.predict(data, num_samples=5, seed=3).draws["survival"]["log_hazard"]
    np.testing.assert_array_equal(a, b)
    # a save from before the option: no config key, no full-rank buffers -> loads as "no refit"
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"].pop("survival_refit")
    (path / "config.json").write_text(json.dumps(cfg))
    tensors = {k: v for k, v in load_file(str(path / "weights.safetensors")).items() if ".post_" not in k}
    save_file(tensors, str(path / "weights.safetensors"), metadata={"format": "bayesfuse", "format_version": "2"})
    old = bf.FusionModel.load(path, device="cpu")
    assert old.survival_refit == "none" and not old.module.heads["survival"].has_fullrank_posterior
    assert np.isfinite(old.predict(data, num_samples=3, seed=0).draws["survival"]["log_hazard"]).all()


def test_fused_elbo_equals_trace_elbo_with_a_fullrank_survival_posterior():
    import pyro

    from bayesfuse.train.svi import elbo_loss

    data, spec = _sim(covariates=["protein"])
    model = bf.FusionModel(data, heads={"survival": spec}, latent_dim=3, hidden=8, device="cpu", dtype="float64")
    store = model._store(data, strict_targets=True)
    module = model._build_module()
    torch.manual_seed(0)
    refit_module_survival_heads(module, store, center="mode", steps=20)
    assert module.heads["survival"].has_fullrank_posterior
    module.train()
    batch = store.batch(torch.arange(0, 90, 2))
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(8)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 0.7, 1, None, method)
        loss.backward()
        out[method] = (loss.detach(), torch.cat([p.grad.reshape(-1) for p in module.parameters()
                                                 if p.grad is not None]))
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("hidden,effect", [(0, None), (8, None), (0, "proportional"), (4, "piecewise")])
def test_closed_form_hessian_equals_autograd_hessian(hidden, effect):
    """The Laplace refit's Hessian (linear design x diagonal curvature) is the exact Hessian of the
    same objective, for every head variant, with unknown labels and clamped log-hazards present."""
    from torch.autograd.functional import hessian

    from bayesfuse.module.survival_refit import neg_log_joint_hessian, survival_prior_log_prob

    g = torch.Generator().manual_seed(3)
    N, D, M = 200, 5, 4
    kw = ({"covariates": ["a", "b"], "covariate_dims": [1, 1], "covariate_effect": effect} if effect else {})
    head = SurvivalHeadModule(D, np.linspace(0.5, 3, 5), baseline=np.full(6, np.log(0.3)), hidden=hidden,
                              **kw).double()
    z = torch.randn(M, N, D, dtype=D64, generator=g)
    tgt = _exp_cohort(N, seed=4)
    tgt["known"] = (torch.rand(N, generator=g) < 0.9).to(D64)
    if effect:
        tgt["covariates"] = torch.randn(N, 2, dtype=D64, generator=g)
    theta = 0.3 * torch.randn(head.n_flat, dtype=D64, generator=g)

    def neg(th):
        s = th.unsqueeze(0).expand(M, -1)
        return -(survival_prior_log_prob(head, s) + head.log_likelihood(z, tgt, head.params_from_flat(s)).sum(-1)).mean()

    for shift in (0.0, 39.5):           # 39.5: the first piece's log-hazard crosses the +-40 clamp for some draws
        th = theta.clone()
        th[0] += shift
        ref = hessian(neg, th)
        got = neg_log_joint_hessian(head, th, z, tgt)
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max())), shift
    assert not torch.allclose(got, torch.diag(torch.diagonal(got)))   # not trivially the prior alone
