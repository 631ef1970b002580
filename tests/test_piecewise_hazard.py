"""Piecewise-constant hazard: torch likelihood / distribution and numpy posterior summaries."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from bayesfuse.distributions.piecewise_hazard import (
    PiecewiseExponential,
    censored_log_likelihood,
    cumulative_hazard,
    exposure,
    log_density,
    log_survival,
    make_cuts,
    piece_index,
)
from bayesfuse.posterior import survival as ps

torch.set_num_threads(1)
D = torch.float64
CUTS = np.array([0.5, 1.2, 3.0])          # K = 4 pieces


def _simulate(rng, n, log_h, cuts, censor_scale=3.0):
    """Exact piecewise-exponential event times (numpy inverse CDF) with random censoring."""
    u = rng.random(n)
    t_event = ps.quantile_time(np.asarray(log_h)[None], cuts, u)[0]          # (n,)
    t_cens = rng.exponential(censor_scale, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(np.float64)
    return time, event


def _hazard_fn(log_h_row, cuts):
    """Independent scalar hazard h(t) (piece [c_k, c_{k+1}))."""
    def h(t):
        return float(np.exp(log_h_row[np.searchsorted(cuts, t, side="right")]))
    return h


# ---------------------------------------------------------------- oracles
def test_single_piece_equals_scipy_exponential():
    rng = np.random.default_rng(1)
    n = 50
    log_h = rng.normal(-0.5, 0.8, size=(n, 1))
    time = rng.exponential(2.0, n)
    event = rng.random(n) < 0.6
    ll = censored_log_likelihood(torch.tensor(log_h, dtype=D), time, event, []).numpy()
    scale = np.exp(-log_h[:, 0])
    ref = np.where(event, stats.expon.logpdf(time, scale=scale), stats.expon.logsf(time, scale=scale))
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-12)
    assert abs(ll.sum() - ref.sum()) < 1e-10


def test_piecewise_equals_lifelines_log_likelihood():
    from lifelines import PiecewiseExponentialFitter

    rng = np.random.default_rng(2)
    n = 400
    time, event = _simulate(rng, n, np.log([0.3, 0.8, 0.5, 1.5]), CUTS)
    assert 0.3 < event.mean() < 0.95
    # no time lies on a breakpoint (conventions at the cut differ: lifelines uses (a, b])
    assert np.min(np.abs(time[:, None] - CUTS)) > 1e-9
    fitter = PiecewiseExponentialFitter(breakpoints=list(CUTS)).fit(time, event.astype(bool))
    lam = fitter.params_.values                                   # lifelines: hazard = 1 / lambda
    log_h = torch.tensor(-np.log(lam), dtype=D).expand(n, 4)
    ours = censored_log_likelihood(log_h, time, event, CUTS).sum().item()
    assert ours == pytest.approx(fitter.log_likelihood_, abs=1e-8)

    # and at arbitrary (not fitted) hazards, through lifelines' own likelihood function
    params = np.array([2.0, 0.7, 1.3, 0.4])
    ref = -n * fitter._negative_log_likelihood_right_censoring(
        params, (time, None), event.astype(bool), np.zeros(n), np.ones(n))
    ours = censored_log_likelihood(torch.tensor(-np.log(params), dtype=D).expand(n, 4),
                                   time, event, CUTS).sum().item()
    assert ours == pytest.approx(float(ref), abs=1e-8)


def test_piecewise_equals_quad_integration_of_hazard():
    rng = np.random.default_rng(3)
    n = 25
    log_h = rng.normal(0.0, 1.0, size=(n, 4))
    time = np.concatenate([rng.uniform(0, 6, n - 3), [0.5, 1.2, 0.0]])   # incl. on a cut and 0
    event = rng.random(n) < 0.5
    event[-3:] = True
    ll = censored_log_likelihood(torch.tensor(log_h, dtype=D), time, event, CUTS).numpy()
    ref = np.empty(n)
    for i in range(n):            # oracle only: loops are fine in the reference
        h = _hazard_fn(log_h[i], CUTS)
        H = integrate.quad(h, 0, time[i], points=[c for c in CUTS if c < time[i]] or None,
                           epsabs=1e-13, epsrel=1e-13)[0]
        ref[i] = event[i] * np.log(h(time[i])) - H
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-10)


def test_exposure_and_piece_index():
    t = torch.tensor([0.0, 1e-12, 0.5, 1.0, 1.2, 5.0], dtype=D)
    e = exposure(t, CUTS)
    assert e.shape == (6, 4)
    torch.testing.assert_close(e.sum(-1), t)
    torch.testing.assert_close(e[3], torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=D))
    torch.testing.assert_close(e[5], torch.tensor([0.5, 0.7, 1.8, 2.0], dtype=D))
    # a time on a cut belongs to the piece starting there
    assert piece_index(t, CUTS).tolist() == [0, 0, 1, 1, 2, 3]
    assert piece_index(t, []).tolist() == [0] * 6


# ---------------------------------------------------------------- derivatives
def test_gradcheck_wrt_log_h():
    rng = np.random.default_rng(4)
    log_h = torch.tensor(rng.normal(size=(2, 7, 4)), dtype=D, requires_grad=True)
    time = torch.tensor(rng.uniform(0, 5, 7), dtype=D)
    event = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=D)
    assert torch.autograd.gradcheck(
        lambda lh: censored_log_likelihood(lh, time, event, CUTS), (log_h,))
    # the analytic gradient: d ll / d log_h_k = event*[k == k(t)] - h_k * exposure_k
    ll = censored_log_likelihood(log_h, time, event, CUTS).sum()
    (g,) = torch.autograd.grad(ll, log_h)
    onehot = torch.nn.functional.one_hot(piece_index(time, CUTS), 4).to(D)
    expected = event[:, None] * onehot - log_h.detach().exp() * exposure(time, CUTS)
    torch.testing.assert_close(g, expected)


def test_derivative_of_log_survival_is_minus_hazard():
    log_h = torch.tensor([[0.3, -1.0, 0.8, -0.2]], dtype=D)
    t = torch.tensor([0.2, 0.9, 2.0, 7.0], dtype=D)                 # one per piece, off the cuts
    eps = 1e-6
    fd = (log_survival(log_h, t + eps, CUTS) - log_survival(log_h, t - eps, CUTS)) / (2 * eps)
    torch.testing.assert_close(fd, -log_h[0].exp(), rtol=1e-8, atol=1e-8)
    # and log f = log h + log S
    torch.testing.assert_close(log_density(log_h, t, CUTS),
                               log_h[0] + log_survival(log_h, t, CUTS))


# ---------------------------------------------------------------- numpy posterior layer
@pytest.fixture
def draws():
    rng = np.random.default_rng(5)
    return rng.normal(-0.7, 1.0, size=(6, 5, 4))          # (S, N, K)


def test_numpy_survival_equals_torch(draws):
    times = np.array([0.0, 0.3, 0.5, 1.0, 1.2, 2.9, 3.0, 10.0])
    S_np = ps.survival_function(draws, CUTS, times)
    assert S_np.shape == (6, 5, 8)
    S_t = log_survival(torch.tensor(draws, dtype=D)[..., None, :], times, CUTS).exp().numpy()
    np.testing.assert_allclose(S_np, S_t, rtol=1e-13, atol=1e-15)
    H_t = cumulative_hazard(torch.tensor(draws, dtype=D)[..., None, :], times, CUTS).numpy()
    np.testing.assert_allclose(ps.cumulative_hazard(draws, CUTS, times), H_t, rtol=1e-13)


def test_survival_monotone_and_given_order(draws):
    rng = np.random.default_rng(6)
    grid = np.linspace(0, 8, 201)
    S = ps.survival_function(draws, CUTS, grid)
    assert np.all(np.diff(S, axis=-1) <= 0)
    assert np.all(S[..., 0] == 1.0) and np.all(S > 0)
    perm = rng.permutation(grid.size)
    np.testing.assert_array_equal(ps.survival_function(draws, CUTS, grid[perm]), S[..., perm])
    # scalar time -> (S, N)
    np.testing.assert_array_equal(ps.survival_function(draws, CUTS, grid[7]), S[..., 7])


def test_median_and_quantiles_solve_survival(draws):
    med = ps.median_survival(draws, CUTS)
    assert med.shape == (6, 5) and np.all(np.isfinite(med))
    S_at = np.exp(-np.einsum("snk,snk->sn", np.exp(draws),
                             exposure(torch.tensor(med), CUTS).numpy()))
    np.testing.assert_allclose(S_at, 0.5, atol=1e-12)
    qs = np.array([0.05, 0.3, 0.5, 0.9])
    tq = ps.quantile_time(draws, CUTS, qs)
    assert tq.shape == (6, 5, 4)
    np.testing.assert_array_equal(tq[..., 2], med)
    assert np.all(np.diff(tq, axis=-1) > 0)
    # solve S(t_q) = 1 - q pointwise, vectorised over draws/patients via a per-q grid
    for j, q in enumerate(qs):
        S_j = np.exp(-np.einsum("snk,snk->sn", np.exp(draws),
                                exposure(torch.tensor(tq[..., j]), CUTS).numpy()))
        np.testing.assert_allclose(S_j, 1 - q, atol=1e-12)
    # the torch icdf is the same closed form
    d = PiecewiseExponential(torch.tensor(draws, dtype=D), CUTS)
    np.testing.assert_allclose(d.icdf(torch.full((6, 5), 0.5, dtype=D)).numpy(), med, rtol=1e-12)


def test_median_infinite_when_survival_never_halves():
    # hazard underflows to 0 in the last piece after too little early hazard
    log_h = np.array([[[-3.0, -3.0, -3.0, -800.0]]])
    assert np.isinf(ps.median_survival(log_h, CUTS)).all()
    # tiny but positive hazard: the exact (huge) median, or inf beyond a horizon
    log_h2 = np.array([[[-3.0, -3.0, -3.0, -30.0]]])
    m = ps.median_survival(log_h2, CUTS)
    assert np.isfinite(m).all() and m[0, 0] > 1e11
    assert np.isinf(ps.median_survival(log_h2, CUTS, horizon=100.0)).all()
    np.testing.assert_array_equal(ps.quantile_time(log_h2, CUTS, [0.0, 1.0])[0, 0], [0.0, np.inf])


def test_risk_is_one_minus_survival(draws):
    for hz in (0.0, 0.5, 2.0, 40.0):
        np.testing.assert_allclose(ps.risk(draws, CUTS, hz),
                                   1 - ps.survival_function(draws, CUTS, hz), atol=1e-15)
    assert ps.risk(draws, CUTS, [1.0, 2.0]).shape == (6, 5, 2)
    assert np.all(ps.risk(draws, CUTS, 0.0) == 0)


def test_restricted_mean_survival_closed_form(draws):
    for tau in (0.0, 0.3, 1.2, 4.0):
        rmst = ps.restricted_mean_survival(draws, CUTS, tau)
        assert rmst.shape == (6, 5)
        for s, i in [(0, 0), (3, 2), (5, 4)]:       # oracle spot-checks
            ref = integrate.quad(lambda t: ps.survival_function(draws[s, i], CUTS, t), 0, tau,
                                 points=[c for c in CUTS if c < tau] or None,
                                 epsabs=1e-13, epsrel=1e-12)[0]
            assert rmst[s, i] == pytest.approx(ref, abs=1e-10)
        assert np.all(rmst <= tau + 1e-15)
    # tau = inf is the mean, equal to the distribution's mean
    d = PiecewiseExponential(torch.tensor(draws, dtype=D), CUTS)
    np.testing.assert_allclose(ps.restricted_mean_survival(draws, CUTS, np.inf), d.mean.numpy(),
                               rtol=1e-12)


def test_numpy_validation_messages(draws):
    with pytest.raises(ValueError, match="non-negative"):
        ps.survival_function(draws, CUTS, [1.0, -0.1])
    with pytest.raises(ValueError, match="len\\(cuts\\) \\+ 1"):
        ps.survival_function(draws, CUTS[:2], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        ps.survival_function(draws, [1.0, 0.5, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ps.quantile_time(draws, CUTS, 1.5)


def test_posterior_module_does_not_import_torch():
    code = ("import sys, bayesfuse.posterior.survival as s; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- distribution
def test_rsample_has_right_cdf_and_wrong_hazard_fails():
    log_h = torch.tensor([-0.5, 0.4, -1.0, 0.2], dtype=D)
    d = PiecewiseExponential(log_h, CUTS)
    torch.manual_seed(11)
    x = d.rsample((4000,))
    assert x.shape == (4000,) and bool((x > 0).all())
    cdf = lambda v: d.cdf(torch.as_tensor(v, dtype=D)).numpy()  # noqa: E731
    assert stats.kstest(x.numpy(), cdf).pvalue > 0.01
    # negative control: samples from a hazard 1.35x too high must be rejected
    wrong = PiecewiseExponential(log_h + 0.3, CUTS).rsample((4000,))
    assert stats.kstest(wrong.numpy(), cdf).pvalue < 0.01


def test_distribution_shapes_log_prob_and_reparam():
    rng = np.random.default_rng(7)
    log_h = torch.tensor(rng.normal(size=(3, 4)), dtype=D, requires_grad=True)
    d = PiecewiseExponential(log_h, CUTS, validate_args=True)
    assert d.batch_shape == (3,) and d.event_shape == ()
    x = d.rsample((5,))
    assert x.shape == (5, 3)
    torch.testing.assert_close(d.log_prob(x), log_density(log_h, x, CUTS))
    torch.testing.assert_close(d.icdf(d.cdf(x)), x)
    x.sum().backward()                                   # reparameterised
    assert log_h.grad is not None and torch.isfinite(log_h.grad).all() and log_h.grad.abs().sum() > 0
    e = d.expand((2, 3))
    assert e.batch_shape == (2, 3) and e.rsample().shape == (2, 3)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor(-1.0, dtype=D))
    ev = torch.tensor([1.0, 0.0, 1.0], dtype=D)
    t = torch.tensor([0.4, 2.0, 5.0], dtype=D)
    torch.testing.assert_close(d.censored_log_prob(t, ev),
                               ev * d.log_prob(t) + (1 - ev) * d.log_survival(t))


def test_usable_in_pyro_sample_and_factor():
    import pyro
    import pyro.distributions as pdist
    from pyro import poutine

    time = torch.tensor([0.3, 1.5, 4.0, 0.9], dtype=D)
    event = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D)
    log_h = torch.tensor([[-0.2, 0.1, -0.5, 0.3]] * 4, dtype=D)

    def model():
        b = pyro.sample("b", pdist.Normal(torch.zeros((), dtype=D), 1.0))
        with pyro.plate("patients", 4):
            pyro.sample("t", PiecewiseExponential(log_h + b, CUTS), obs=time)
            pyro.factor("cens", censored_log_likelihood(log_h + b, time, event, CUTS))

    tr = poutine.trace(poutine.condition(model, {"b": torch.tensor(0.25, dtype=D)})).get_trace()
    tr.compute_log_prob()
    torch.testing.assert_close(tr.nodes["t"]["log_prob"], log_density(log_h + 0.25, time, CUTS))
    torch.testing.assert_close(tr.nodes["cens"]["log_prob"],
                               censored_log_likelihood(log_h + 0.25, time, event, CUTS))


# ---------------------------------------------------------------- edge cases
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases_finite(dtype):
    time = np.array([0.0, 1e-12, 0.5, 1e6, 3.0, 1e6])
    log_h = torch.linspace(-30, 30, 6 * 4, dtype=dtype).reshape(6, 4)[torch.randperm(6)]
    log_h = torch.cat([log_h, torch.full((1, 4), -30.0, dtype=dtype),
                       torch.full((1, 4), 30.0, dtype=dtype)]).requires_grad_(True)
    time = np.concatenate([time, [1e6, 1e6]])
    for event in (np.zeros(8), np.eye(8)[3], np.ones(8)):       # all censored, single event, all
        ll = censored_log_likelihood(log_h, time, event, CUTS)
        assert ll.dtype == dtype and ll.shape == (8,)
        assert torch.isfinite(ll).all()
        (g,) = torch.autograd.grad(ll.sum(), log_h)
        assert torch.isfinite(g).all()
    lh = log_h.detach().double().numpy()[None]
    S = ps.survival_function(lh, CUTS, [0.0, 1e-12, 1e6])
    assert np.all(np.isfinite(S)) and np.all((S >= 0) & (S <= 1))
    assert np.all(np.isfinite(ps.restricted_mean_survival(lh, CUTS, 1e6)))
    assert not np.isnan(ps.median_survival(lh, CUTS)).any()
    d = PiecewiseExponential(log_h.detach(), CUTS)
    x = d.rsample((50,))
    assert torch.isfinite(x).all() and bool((x > 0).all())
    assert torch.isfinite(d.log_prob(x)).all()


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(8)
    lh = rng.normal(size=(3, 10, 4))
    time = rng.uniform(0, 6, 10)
    event = rng.random(10) < 0.5
    ll64 = censored_log_likelihood(torch.tensor(lh, dtype=D), time, event, CUTS)
    ll32 = censored_log_likelihood(torch.tensor(lh, dtype=torch.float32), time, event, CUTS)
    assert ll32.dtype == torch.float32
    torch.testing.assert_close(ll32.double(), ll64, rtol=1e-5, atol=1e-5)


def test_torch_validation_messages():
    lh = torch.zeros(3, 4, dtype=D)
    with pytest.raises(ValueError, match=">= 0"):
        censored_log_likelihood(lh, [1.0, -1.0, 2.0], [1, 0, 1], CUTS)
    with pytest.raises(ValueError, match="0/1"):
        censored_log_likelihood(lh, [1.0, 1.0, 2.0], [1, 2, 1], CUTS)
    with pytest.raises(ValueError, match="len\\(cuts\\) \\+ 1"):
        censored_log_likelihood(lh, [1.0, 1.0, 2.0], [1, 0, 1], CUTS[:1])
    with pytest.raises(ValueError, match="do not include 0 or inf"):
        censored_log_likelihood(lh[:, :3], [1.0, 1.0, 2.0], [1, 0, 1], [0.0, 1.0])


# ---------------------------------------------------------------- make_cuts
def test_make_cuts_quantiles_of_event_times():
    rng = np.random.default_rng(9)
    time = rng.exponential(2.0, 300)
    event = rng.random(300) < 0.6
    cuts = make_cuts(time, event, 5)
    assert cuts.shape == (4,) and cuts.dtype == np.float64
    np.testing.assert_allclose(cuts, np.quantile(time[event], [0.2, 0.4, 0.6, 0.8]))
    assert not np.allclose(cuts, np.quantile(time, [0.2, 0.4, 0.6, 0.8]))   # events, not all
    assert make_cuts(time, event, 1).shape == (0,)


def test_make_cuts_fallbacks_and_ties():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # fewer than 2 events: quantiles of all (positive) times
    np.testing.assert_allclose(make_cuts(time, [0, 0, 1, 0, 0], 2), [3.0])
    np.testing.assert_allclose(make_cuts(time, np.zeros(5), 4), [2.0, 3.0, 4.0])
    # tied event times -> fewer, still strictly increasing and positive cuts
    tied = np.array([0.0, 2.0, 2.0, 2.0, 2.0, 7.0])
    cuts = make_cuts(tied, np.ones(6), 6)
    assert np.all(np.diff(cuts) > 0) and np.all(cuts > 0) and len(cuts) < 5
    with pytest.raises(ValueError, match="positive integer"):
        make_cuts(time, np.ones(5), 0)
    with pytest.raises(ValueError, match=">= 0"):
        make_cuts([-1.0, 2.0], [1, 1], 2)
