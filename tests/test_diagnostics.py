"""VI diagnostics: PSIS k-hat, Pyro vs NumPyro sub-model, SVI vs NUTS, SBC (slow)."""

import numpy as np
import pytest
import torch

from bayesfuse.diagnostics import khat_threshold, psis_khat
from bayesfuse.diagnostics.reference import (
    compare_posteriors,
    fit_svi_submodel,
    numpyro_log_joint,
    pyro_log_joint,
    run_nuts,
    sbc_ranks,
)
from bayesfuse.diagnostics.vi import guide_khat
from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule


def _softmax_data(n=150, d=2, c=3, seed=0, scale=1.5):
    rs = np.random.RandomState(seed)
    z = rs.randn(n, d)
    logits = z @ (rs.randn(d, c) * scale)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return z, np.array([rs.choice(c, p=pi) for pi in p])


def test_khat_threshold_and_psis():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(10**6) == 0.7
    rs = np.random.RandomState(0)
    x = rs.randn(4000)
    # q = N(0, 1): target N(0, 0.8^2) is narrower (good), target N(0, 3^2) is much wider (bad tails)
    good = -0.5 * (x / 0.8) ** 2 + 0.5 * x**2
    bad = -0.5 * (x / 3.0) ** 2 + 0.5 * x**2
    assert psis_khat(good) < 0.5
    assert psis_khat(bad) > 0.7
    with pytest.raises(ValueError, match="non-finite"):
        psis_khat(np.array([0.0, np.inf] * 20))


@pytest.mark.parametrize("weight", [1.0, 7.5])
def test_pyro_and_numpyro_log_joint_agree(weight):
    z, y = _softmax_data(n=40, d=3, c=4)
    head = BayesianCategoricalHeadModule(3, 4, prior_scale=0.8).double()
    for s in range(3):
        theta = torch.randn(head.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        a = pyro_log_joint(head, torch.tensor(z), torch.tensor(y), theta, weight)
        b = numpyro_log_joint(z, y, theta.numpy(), 4, prior_scale=0.8, weight=weight)
        assert a == pytest.approx(b, rel=1e-10, abs=1e-9)
        # the package's own log joint (used for k-hat) agrees too
        assert float(head.log_joint(torch.tensor(z), torch.tensor(y), theta, weight)) == pytest.approx(a, rel=1e-10)
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 4   # negative control: one label changed -> different log joint
    assert pyro_log_joint(head, torch.tensor(z), torch.tensor(y2), theta, weight) != pytest.approx(a, rel=1e-6)


def _svi_vs_nuts(n, d, c, steps, warmup, samples):
    z, y = _softmax_data(n=n, d=d, c=c)
    nuts = run_nuts(z, y, c, num_warmup=warmup, num_samples=samples, num_chains=4, seed=1)
    assert nuts.rhat_max < 1.01, nuts.rhat_max
    head = fit_svi_submodel(z, y, c, guide="fullrank", steps=steps, num_particles=2, seed=0)
    with torch.no_grad():
        draws = head.posterior_q.distribution().sample((4000,)).numpy()
    good = compare_posteriors(draws, nuts.flat)
    loc = draws.mean(0)
    shrunk = compare_posteriors(loc + (draws - loc) / 3, nuts.flat)
    zz, yy = torch.tensor(z), torch.tensor(y)
    return good, shrunk, guide_khat(head, zz, yy, 2000, weight=1.0), guide_khat(head, zz, yy, 2000, 1.0, shrink=3)


def test_svi_fullrank_matches_nuts_small():
    good, shrunk, k, k_shrunk = _svi_vs_nuts(n=80, d=1, c=3, steps=600, warmup=300, samples=600)
    assert good.passed, good
    assert not shrunk.passed and shrunk.max_sd_ratio < 0.5, shrunk
    assert k < 0.7 < k_shrunk


@pytest.mark.slow
def test_svi_vs_nuts_guides_larger():
    good, shrunk, k, k_shrunk = _svi_vs_nuts(n=400, d=4, c=3, steps=3000, warmup=500, samples=500)
    assert good.passed and not shrunk.passed
    assert k < 0.7 < k_shrunk
    z, y = _softmax_data(n=400, d=4, c=3)
    nuts = run_nuts(z, y, 3, num_warmup=500, num_samples=500, num_chains=4, seed=1)
    mf = fit_svi_submodel(z, y, 3, guide="meanfield", steps=3000, num_particles=2)
    with torch.no_grad():
        d = mf.posterior_q.distribution().sample((4000,)).numpy()
    assert not compare_posteriors(d, nuts.flat).passed   # mean-field under-disperses correlated weights


@pytest.mark.slow
def test_sbc_fullrank_guide_ranks_uniform():
    from scipy import stats

    ranks = sbc_ranks(n_replicates=100, n_patients=60, latent_dim=1, n_classes=2, steps=400, seed=0)
    counts = np.stack([np.bincount(r // 10, minlength=10) for r in ranks.T])   # 10 bins of 10 ranks
    p = stats.chisquare(counts.sum(0)).pvalue
    assert p > 0.001, counts
