"""Survival head: likelihood, gradients, posterior summaries, robustness, recovery on simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Survival
from bayesfuse.metrics import concordance_harrell, d_calibration
from bayesfuse.model.survival_targets import encode_survival, fit_survival_spec
from bayesfuse.module.survival_head import SurvivalHeadModule
from bayesfuse.posterior import Posterior
from bayesfuse.posterior import survival as ps


# ----------------------------------------------------------------------------- helpers
def _numpy_censored_ll(log_h, time, event, cuts):
    """Direct per-patient loop: event * log h_{k(t)} - sum_k h_k * |piece_k ∩ [0, t]|."""
    edges = np.r_[0.0, cuts, np.inf]
    out = np.empty(len(time))
    for i, (t, e) in enumerate(zip(time, event)):
        H = 0.0
        for k in range(len(edges) - 1):
            H += np.exp(log_h[i, k]) * max(0.0, min(t, edges[k + 1]) - edges[k])
        k_t = np.searchsorted(cuts, t, side="right")
        out[i] = e * log_h[i, k_t] - H
    return out


def _head(latent_dim=3, cuts=(1.0, 2.5, 4.0), hidden=0, seed=0):
    torch.manual_seed(seed)
    return SurvivalHeadModule(latent_dim, list(cuts), baseline=np.zeros(len(cuts) + 1), hidden=hidden,
                              smoothness=0.5).double()


def _fake_posterior(S=7, N=5, K=4, seed=0):
    rng = np.random.default_rng(seed)
    cuts = [1.0, 2.0, 5.0][: K - 1]
    spec = Survival(cuts=cuts)
    lh = rng.normal(-1.0, 0.5, (S, N, K))
    return Posterior(sample_ids=np.array([f"p{i}" for i in range(N)], dtype=object), heads={"survival": spec},
                     draws={"survival": {"log_hazard": lh}}, latent=np.zeros((S, N, 2)),
                     latent_loc=np.zeros((N, 2)), latent_scale=np.ones((N, 2)),
                     presence=pd.DataFrame({"a": np.ones(N, bool)}, index=[f"p{i}" for i in range(N)]),
                     modality_precision=np.ones((N, 1, 2))), lh, np.asarray(cuts)


# ----------------------------------------------------------------------------- posterior API
def test_posterior_survival_shapes_and_time_order():
    post, lh, cuts = _fake_posterior()
    times = np.array([3.0, 0.0, 7.5, 1.0, 1.0])
    S = post.survival_function("survival", times)
    assert S.shape == (7, 5, 5)
    np.testing.assert_allclose(S[..., 1], 1.0)
    order = np.argsort(times, kind="stable")
    S_sorted = post.survival_function("survival", times[order])
    np.testing.assert_allclose(S[..., order], S_sorted)
    assert np.all(np.diff(S_sorted, axis=-1) <= 1e-12)           # non-increasing in time
    # direct closed form for one draw / patient
    h = np.exp(lh[2, 3])
    H = h[0] * 1 + h[1] * 1 + h[2] * 1.0                          # t = 3: [0,1) [1,2) [2,3)
    np.testing.assert_allclose(S[2, 3, 0], np.exp(-H), rtol=1e-12)
    med = post.median_survival("survival")
    assert med.shape == (7, 5)
    np.testing.assert_allclose(post.survival_function("survival", med[0, 0])[0, 0], 0.5, rtol=1e-9)
    r = post.risk("survival", horizon=3.0)
    assert r.shape == (7, 5)
    np.testing.assert_allclose(r, 1 - S[..., 0], atol=1e-12)
    summ = post.survival_summary("survival", times)
    assert list(summ.columns[:5]) == ["sample_id", "time", "mean", "lower", "upper"]
    assert len(summ) == 5 * 5
    row = summ[(summ.sample_id == "p3") & (summ.time == 7.5)].iloc[0]
    np.testing.assert_allclose(row["mean"], S[:, 3, 2].mean())
    np.testing.assert_allclose(row["lower"], np.quantile(S[:, 3, 2], 0.05))
    assert (summ["lower"] <= summ["mean"] + 1e-12).all() and (summ["mean"] <= summ["upper"] + 1e-12).all()
    pd.testing.assert_frame_equal(post.summary("survival", times=times), summ)  # summary() dispatches on the head
    with pytest.raises(ValueError, match="survival head: pass times"):
        post.summary("survival")
    with pytest.raises(TypeError):
        post.probs("survival")
    with pytest.raises(ValueError, match="negative"):
        post.survival_function("survival", [-1.0])


def test_median_inf_when_survival_stays_above_half():
    post, lh, cuts = _fake_posterior()
    post.draws["survival"]["log_hazard"] = np.full_like(lh, -np.inf)
    assert np.all(np.isinf(post.median_survival("survival")))


# ----------------------------------------------------------------------------- likelihood & gradients
def test_head_loglik_equals_direct_computation():
    head = _head()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64)
    params = {"b": torch.randn(4, generator=g, dtype=torch.float64) - 1,
              "w": torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.3}
    time = torch.tensor([0.5, 1.0, 2.0, 3.7, 4.0, 9.0], dtype=torch.float64)
    event = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64)
    known = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.float64)
    ll = head.log_likelihood(z, {"time": time, "event": event, "known": known}, params)
    log_h = (params["b"] + z @ params["w"]).numpy()
    ref = _numpy_censored_ll(log_h, time.numpy(), event.numpy(), np.array([1.0, 2.5, 4.0])) * known.numpy()
    np.testing.assert_allclose(ll.detach().numpy(), ref, rtol=1e-12)
    assert ll[4] == 0.0                                             # unknown label drops out
    # a different non-PH parameterisation must change the likelihood (no tautology)
    params2 = {"b": params["b"], "w": params["w"] + torch.tensor([0.0, 0.0, 0.0, 0.5], dtype=torch.float64)}
    ll2 = head.log_likelihood(z, {"time": time, "event": event, "known": known}, params2)
    assert not torch.allclose(ll[:5], ll2[:5]) or not torch.allclose(ll, ll2)


@pytest.mark.parametrize("hidden", [0, 5])
def test_head_gradcheck(hidden):
    head = _head(hidden=hidden)
    P = hidden or 3
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(4, generator=g, dtype=torch.float64) - 1).requires_grad_()
    w = (0.3 * torch.randn(P, 4, generator=g, dtype=torch.float64)).requires_grad_()
    target = {"time": torch.tensor([0.3, 1.7, 2.6, 4.4, 8.0], dtype=torch.float64),
              "event": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64),
              "known": torch.ones(5, dtype=torch.float64)}
    f = lambda z_, b_, w_: head.log_likelihood(z_, target, {"b": b_, "w": w_})  # noqa: E731
    assert torch.autograd.gradcheck(f, (z, b, w), eps=1e-6, atol=1e-6)


def test_random_walk_prior_and_guide_sites():
    """The prior on the increments is a random walk on b and w; sites are named per head."""
    import pyro
    from pyro import poutine

    head = _head()
    tr = poutine.trace(lambda: head.model_params("surv")).get_trace()
    assert {"surv.b_incr", "surv.w_incr"} <= set(tr.nodes)
    b = tr.nodes["surv.b_incr"]["value"]
    params = head._from_increments(b, tr.nodes["surv.w_incr"]["value"])
    np.testing.assert_allclose(np.diff(params["b"].numpy()), b[1:].numpy())
    assert tr.nodes["surv.b_incr"]["fn"].base_dist.scale[1].item() == pytest.approx(0.5)
    d = head.draw_params(11)
    assert d["b"].shape == (11, 4) and d["w"].shape == (11, 3, 4)
    gtr = poutine.trace(lambda: head.guide_params("surv")).get_trace()
    assert gtr.nodes["surv.w_incr"]["value"].shape == (3, 4)
    pyro.clear_param_store()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_robust_edge_cases_finite(dtype):
    """All-censored batch, tiny and huge times, a single event: finite loss and gradients."""
    times = np.array([1e-9, 1e-3, 1.0, 50.0, 1e6])
    for event in (np.zeros(5), np.array([0, 0, 1, 0, 0.0])):
        cuts = bf.distributions.piecewise_hazard.make_cuts(times, event, 6)
        head = SurvivalHeadModule(4, cuts, baseline=np.full(len(cuts) + 1, -3.0), hidden=8).to(dtype)
        z = torch.randn(5, 4, dtype=dtype, requires_grad=True)
        params = head.draw_params(1)
        params = {k: v[0].detach().requires_grad_() for k, v in params.items()}
        target = {"time": torch.as_tensor(times, dtype=dtype), "event": torch.as_tensor(event, dtype=dtype),
                  "known": torch.ones(5, dtype=dtype)}
        ll = head.log_likelihood(z, target, params)
        ll.sum().backward()
        assert torch.isfinite(ll).all()
        assert all(torch.isfinite(t.grad).all() for t in (z, params["b"], params["w"]))
        # extreme weights are clamped, not overflowed
        big = {"b": params["b"].detach() + 500, "w": params["w"].detach()}
        assert torch.isfinite(head.log_likelihood(z, target, big)).all()


# ----------------------------------------------------------------------------- targets
def _targets(times, events):
    return pd.DataFrame({"time": times, "event": events}, index=[f"s{i}" for i in range(len(times))])


def test_nonpositive_times_error_names_rows_and_fix():
    tg = _targets([5.0, -1.0, 3.0, 0.0, 7.0], [1, 0, 1, 1, 0])
    with pytest.raises(DataError, match=r"s1 \(time=-1\).*s3 \(time=0\).*nonpositive_times='shift'"):
        fit_survival_spec("survival", Survival(), tg)


def test_nonpositive_shift_and_drop():
    tg = _targets([5.0, -1.0, 3.0, 0.0, 7.0, np.nan], [1, 0, 1, 1, 0, 1])
    spec = fit_survival_spec("survival", Survival(nonpositive_times="shift", n_intervals=2), tg)
    enc = encode_survival("survival", spec, tg, 6, strict=True)
    np.testing.assert_allclose(enc["time"][:5], [5.0, 1.5, 3.0, 1.5, 7.0])
    np.testing.assert_allclose(enc["known"], [1, 1, 1, 1, 1, 0])
    spec = fit_survival_spec("survival", Survival(nonpositive_times="drop", n_intervals=2), tg)
    enc = encode_survival("survival", spec, tg, 6, strict=True)
    np.testing.assert_allclose(enc["known"], [1, 0, 1, 0, 1, 0])
    assert np.all(enc["time"] > 0)
    # prediction time: targets are not used, bad rows are simply unknown (no error)
    enc = encode_survival("survival", Survival(cuts=[4.0]), tg, 6, strict=False)
    np.testing.assert_allclose(enc["known"], [1, 0, 1, 0, 1, 0])
    assert encode_survival("survival", spec, None, 3, strict=False)["known"].sum() == 0
    with pytest.raises(DataError, match="0/1"):
        fit_survival_spec("survival", Survival(), _targets([1.0, 2.0], [1, 2]))
    with pytest.raises(ValueError, match="nonpositive_times"):
        Survival(nonpositive_times="clip")


def test_cuts_from_training_events_only():
    tg = _targets([1.0, 2.0, 3.0, 4.0, 100.0, 200.0], [1, 1, 1, 1, 0, 0])
    spec = fit_survival_spec("s", Survival(n_intervals=2), tg)
    assert spec.cuts == [2.5]                                       # median of event times, not all times
    assert len(spec.baseline) == 2 and np.all(np.isfinite(spec.baseline))


def test_auto_smoothness_rule_follows_events_per_piece():
    from bayesfuse.model.survival_targets import auto_smoothness

    assert auto_smoothness(60, 12) == pytest.approx(0.1)              # 5 events per piece: floor
    assert auto_smoothness(16 * 12, 12) == pytest.approx(0.1)         # the floor's edge
    assert auto_smoothness(100 * 12, 12) == pytest.approx(0.25)       # 0.025 * sqrt(100)
    assert auto_smoothness(4800, 12) == pytest.approx(0.5)            # 400 per piece: cap
    assert auto_smoothness(1e6, 12) == pytest.approx(0.5)
    values = [auto_smoothness(e, 12) for e in (0, 100, 500, 1000, 2000, 5000)]
    assert values == sorted(values)


def test_auto_smoothness_resolved_from_training_events_and_explicit_value_kept():
    rng = np.random.default_rng(0)
    t = rng.exponential(1.0, 3000)
    e = (rng.random(3000) < 0.8).astype(int)
    spec = fit_survival_spec("s", Survival(n_intervals=6), _targets(t, e))
    expected = float(np.clip(0.025 * np.sqrt(e.sum() / 6), 0.1, 0.5))
    assert spec.smoothness == pytest.approx(expected) and 0.1 < spec.smoothness <= 0.5
    few = fit_survival_spec("s", Survival(n_intervals=6), _targets(t[:60], e[:60]))
    assert few.smoothness == pytest.approx(0.1)
    kept = fit_survival_spec("s", Survival(n_intervals=6, smoothness=0.7), _targets(t, e))
    assert kept.smoothness == 0.7
    with pytest.raises(bf.exceptions.ArgumentError, match="smoothness"):
        fit_survival_spec("s", Survival(smoothness="wide"), _targets(t, e))
    with pytest.raises(ValueError, match="still 'auto'"):
        SurvivalHeadModule.from_spec(Survival(cuts=[1.0], baseline=[0.0, 0.0], weight=1.0), 3)


# ----------------------------------------------------------------------------- end to end (simulated)
@pytest.fixture(scope="module")
def sim_fit():
    torch.set_num_threads(1)
    data, truth = bf.datasets.simulate(n_patients=900, latent_dim=3, n_origins=0, survival_effect=1.0, seed=1,
                                       modalities={"expr": ("gaussian", 60), "mut": ("bernoulli", 30)})
    train, test = data.subset(split="train"), data.subset(split="test")
    model = bf.FusionModel(train, heads={"subtype": "categorical",
                                         "survival": bf.heads.Survival(time="time", event="event")},
                           latent_dim=4, hidden=32, device="cpu", dtype="float64")
    model.fit(seed=0, max_epochs=120, progress=False)
    post = model.predict(test, num_samples=200, seed=0)
    return data, truth, train, test, model, post


def _own_time_survival(post, t):
    lh, cuts = post.draws["survival"]["log_hazard"], post.survival_cuts("survival")
    return np.array([ps.survival_function(lh[:, i], cuts, t[i]).mean() for i in range(len(t))])


def test_simulated_recovery_concordance_and_dcalibration(sim_fit):
    data, truth, train, test, model, post = sim_fit
    t = test.targets["time"].to_numpy(float)
    e = test.targets["event"].to_numpy(float).astype(bool)
    rows = np.searchsorted(truth.sample_ids, test.sample_ids)
    c_oracle = concordance_harrell(t, e, -truth.weibull_log_scale[rows])
    c_model = concordance_harrell(t, e, post.risk("survival", horizon=36.0).mean(0))
    assert c_model > c_oracle - 0.05, (c_model, c_oracle)
    # positive control: the model's own S_i(t_i) passes D-calibration
    s_own = _own_time_survival(post, t)
    assert d_calibration(s_own, e).p_value > 0.05
    # the oracle passes too (sanity of the metric on this cohort)
    s_true = truth.survival_function(t)[rows, np.arange(len(t))]
    assert d_calibration(s_true, e).p_value > 0.05
    # negative control: predicted times x3 (S_pred(t) = S(t / 3)) must fail
    s_bad = _own_time_survival(post, t / 3.0)
    assert d_calibration(s_bad, e).p_value < 0.01
    # multi-task: the categorical head trained alongside is informative
    acc = (post.predict("subtype").to_numpy() == test.targets["subtype"].to_numpy()).mean()
    assert acc > 0.6


def test_bands_widen_far_from_training_data(sim_fit):
    """Weight uncertainty: the band of log h(t | z) at fixed z grows with distance from the data."""
    data, truth, train, test, model, post = sim_fit
    head = model.module.heads["survival"]
    draws = head.draw_params(400)
    z_near = torch.as_tensor(post.latent_loc)                       # test patients (like the training data)
    radius = z_near.norm(dim=-1, keepdim=True)
    z_far = z_near / radius * 4.0 * radius.median()                 # same directions, 4x the typical radius
    with torch.no_grad():
        sd_near = head.log_hazard(z_near[None].expand(400, -1, -1), draws).std(0).mean().item()
        sd_far = head.log_hazard(z_far[None].expand(400, -1, -1), draws).std(0).mean().item()
    assert sd_far > 1.5 * sd_near, (sd_near, sd_far)
    # and the posterior-predictive draws (latent + weight uncertainty) are not degenerate
    assert post.draws["survival"]["log_hazard"].std(0).min() > 0


def test_bands_widen_in_pieces_with_few_events():
    """A late piece holding few events gets a wider posterior band of the baseline than a busy piece."""
    data, _ = bf.datasets.simulate(n_patients=500, latent_dim=2, n_origins=0, n_subtypes=0, seed=5,
                                   modalities={"expr": ("gaussian", 20)})
    train = data.subset(split="train")
    t = train.targets["time"].to_numpy()
    e = train.targets["event"].to_numpy().astype(bool)
    cuts = [float(np.quantile(t[e], 0.5)), float(np.quantile(t[e], 0.97))]
    model = bf.FusionModel(train, heads={"survival": bf.heads.Survival(cuts=cuts)}, latent_dim=2, hidden=16,
                           device="cpu")
    model.fit(seed=0, max_epochs=60, progress=False)
    head = model.module.heads["survival"]
    b = head.draw_params(2000)["b"].detach().numpy()              # (S, K)
    width = np.quantile(b, 0.95, axis=0) - np.quantile(b, 0.05, axis=0)
    assert width[2] > 1.5 * width[0], width                       # ~3% of events vs ~50%


def test_inference_data_has_survival(sim_fit):
    post = sim_fit[-1]
    idata = post.to_inference_data()
    K = len(post.survival_cuts("survival")) + 1
    assert idata.posterior["survival_log_hazard"].shape == (1, 200, post.n_patients, K)
    grid = post.default_times("survival")
    np.testing.assert_allclose(idata.posterior["survival_survival"].values[0],
                               post.survival_function("survival", grid), rtol=1e-6)
    assert "subtype_probs" in idata.posterior


def test_save_load_roundtrip_identical_draws(sim_fit, tmp_path):
    data, truth, train, test, model, post = sim_fit
    model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m", device="cpu")
    assert loaded.heads["survival"].cuts == model.heads["survival"].cuts
    p1 = model.predict(test, num_samples=30, seed=4)
    p2 = loaded.predict(test, num_samples=30, seed=4)
    np.testing.assert_array_equal(p1.draws["survival"]["log_hazard"], p2.draws["survival"]["log_hazard"])
    np.testing.assert_array_equal(p1.survival_function("survival", [10.0, 30.0]),
                                  p2.survival_function("survival", [10.0, 30.0]))


def test_model_rejects_nonpositive_times_unless_opted_in():
    data, _ = bf.datasets.simulate(n_patients=80, latent_dim=2, n_origins=0, n_subtypes=0, seed=1,
                                   modalities={"expr": ("gaussian", 5)})
    tg = data.targets.copy()
    tg.iloc[[3, 7], tg.columns.get_loc("time")] = [0.0, -2.0]
    bad = bf.MultiModalData.from_frames({"expr": data.modality("expr")}, targets=tg)
    with pytest.raises(DataError, match="sim-00003.*sim-00007.*nonpositive_times"):
        bf.FusionModel(bad, heads={"survival": bf.heads.Survival()}, device="cpu")
    model = bf.FusionModel(bad, heads={"survival": bf.heads.Survival(nonpositive_times="drop")}, device="cpu")
    model.fit(seed=0, max_epochs=3, kl_warmup_epochs=1, progress=False)
    post = model.predict(bad, num_samples=5)
    assert np.isfinite(post.draws["survival"]["log_hazard"]).all()


# ----------------------------------------------------------------------------- real data (slow)
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name,c_floor", [
    ("tcga_gbmlgg", 0.8025), ("metabric", 0.6313), ("whas", 0.8165),
    # Known open gap (issue 3): after the head weight stopped tempering the head posterior, gbsg's
    # D-calibration p on the external GBSG cohort is 0.004-0.015 over fit seeds 0-4 (C 0.69 still >= DeepSurv's
    # 0.6684); CoxPH (0.016) and RSF (0.028-0.042) fail it too: GBSG's first-year hazard is about half
    # Rotterdam's (docs/studies/survival.md Notes).
    pytest.param("gbsg", 0.6684, marks=pytest.mark.xfail(reason="gbsg D-calibration p < 0.05: early-hazard shift of the external GBSG cohort (docs/studies/survival.md Notes)",
                                                          strict=False)),
])
def test_realdata_acceptance(name, c_floor):
    """Test-split Harrell C at least the measured lifelines CoxPH C on the same split (studies/survival_options/survival.py, penalizer 0.1;
    gbsg: the higher DeepSurv published C) and D-calibration not rejected. Numbers: docs/studies/survival.md."""
    from conftest import dataset_dir

    data = bf.MultiModalData.read_dir(dataset_dir(name))
    train, test = data.subset(split="train"), data.subset(split="test")
    model = bf.FusionModel(train, heads={"survival": bf.heads.Survival(nonpositive_times="drop")}, device="cpu")
    model.fit(seed=0, progress=False)
    t = test.targets["time"].to_numpy(float)
    ok = t > 0
    test = test.subset(ids=test.sample_ids[ok])
    t, e = t[ok], test.targets["event"].to_numpy(float).astype(bool)
    post = model.predict(test, num_samples=300, seed=0)
    tau = float(np.quantile(t[e], 0.9))
    c = concordance_harrell(t, e, -post.restricted_mean_survival("survival", tau).mean(0))
    assert c >= c_floor, c
    assert d_calibration(_own_time_survival(post, t), e).p_value > 0.05


def test_survival_at_own_times_equals_per_patient_grid():
    """Vectorised S_i(t_i) equals survival_function evaluated patient by patient (float64)."""
    from bayesfuse.posterior import survival as ps

    rng = np.random.default_rng(0)
    lh = rng.normal(-1.0, 0.7, size=(7, 9, 4))
    cuts = np.array([0.5, 1.2, 3.0])
    t = np.array([0.0, 0.3, 0.5, 0.9, 1.2, 2.0, 3.0, 7.5, 40.0])
    got = ps.survival_at_own_times(lh, cuts, t)
    want = np.stack([ps.survival_function(lh[:, i, :], cuts, t[i]) for i in range(t.size)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="one time per patient"):
        ps.survival_at_own_times(lh, cuts, t[:-1])
