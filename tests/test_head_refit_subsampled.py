"""Head-refit options: sub-sampled-ELBO latents (``modality_dropout``) and the power posterior
(``likelihood_power``), docs/studies/bayesian.md."""

import types

import pytest
import torch

from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.head_refit import _subset_sampler, refit_head_posterior, refit_module_heads

MASKER = types.SimpleNamespace(random_modality_mask=lambda pres, p: FusionModule.random_modality_mask(None, pres, p))


def _experts(n):
    """Two near-exact experts per patient at z = +5 and z = -5 (D = 1), float64."""
    loc = torch.tensor([5.0, -5.0], dtype=torch.float64).view(2, 1, 1).expand(2, n, 1).contiguous()
    return loc, torch.full_like(loc, 1e-4)


def test_subset_sampler_draws_the_subset_posteriors_with_the_mvae_frequencies():
    torch.manual_seed(0)
    n, K = 500, 8
    loc, scale = _experts(n)
    pres = torch.ones(2, n, dtype=torch.float64)
    z = _subset_sampler(MASKER, loc, scale, pres, 0.5)(K)
    assert z.shape == (K, n, 1)
    # tiny expert sds: z is the PoE mean of the kept subset: both -> 0, one -> +-5 (prior sd 1 negligible)
    both, only0, only1 = [(z - v).abs().lt(1e-2).double().mean().item() for v in (0.0, 5.0, -5.0)]
    assert both + only0 + only1 == pytest.approx(1.0)
    # p = 0.5: both kept 1/4; one kept 1/4 + (both dropped 1/4, one restored) 1/8 = 3/8 each
    assert both == pytest.approx(0.25, abs=0.03)
    assert only0 == pytest.approx(0.375, abs=0.03) and only1 == pytest.approx(0.375, abs=0.03)
    # negative control: p = 0 keeps every modality, i.e. q(z | x_all)
    z0 = _subset_sampler(MASKER, loc, scale, pres, 0.0)(K)
    assert z0.abs().max().item() < 1e-2
    # a patient with one modality always keeps it
    pres1 = pres.clone()
    pres1[1] = 0
    assert (_subset_sampler(MASKER, loc, scale, pres1, 0.5)(K) - 5.0).abs().max().item() < 1e-2


def test_refit_with_subset_latents_targets_a_different_posterior():
    """Conditioning on less separated (subset) latents shortens the head weights."""
    g = torch.Generator().manual_seed(1)
    n = 200
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * y - 1).double().view(n, 1)
    # modality 0 separates the classes well (+-3), modality 1 carries nothing (0), equal sds
    loc = torch.stack([3.0 * sign, torch.zeros(n, 1, dtype=torch.float64)])
    scale = torch.full_like(loc, 0.5)
    pres = torch.ones(2, n, dtype=torch.float64)
    norms = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        head = BayesianCategoricalHeadModule(1, 2, guide="fullrank", prior_scale=3.0).double()
        sampler = _subset_sampler(MASKER, loc, scale, pres, p)
        zl = sampler(1)[0]
        refit_head_posterior(head, zl, torch.zeros_like(zl), y, steps=400, lr=0.05, z_sampler=sampler)
        norms[p] = head.posterior_q.loc.norm().item()
    # the all-modality latents (PoE of +-3 and 0: +-1.2 with sd ~0.3) and the subset mixture
    # (also +-3 with sd 0.5 and 0 with sd 0.5) give different optima; the subsets include
    # uninformative z = 0 draws, which cap the achievable likelihood and shorten the weights
    assert norms[0.5] < 0.8 * norms[0.0]


def test_refit_module_heads_validates_dropout():
    with pytest.raises(ValueError, match="modality_dropout"):
        refit_module_heads(None, None, modality_dropout=1.0)


def _overlap_data(n=120, seed=2):
    """Three overlapping classes in 2-D: the likelihood, not the prior, sets the posterior."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    return centres[y] + torch.randn(n, 2, generator=g, dtype=torch.float64), y


def _power_refit(z, y, eta=None):
    torch.manual_seed(0)
    head = BayesianCategoricalHeadModule(2, 3, guide="fullrank", prior_scale=3.0).double()
    kw = {} if eta is None else {"likelihood_power": eta}
    trace = refit_head_posterior(head, z, torch.full_like(z, 1e-9), y, steps=400, lr=0.05, **kw)
    d = head.posterior_q.distribution()
    with torch.no_grad():   # E_q[sum_n log p(y_n | z_n, theta)], 2000 draws
        ell = head.log_likelihood(z, {"y": y}, {"theta": d.sample((2000,))}).sum(-1).mean().item()
    return trace, ell, d.variance.sqrt().mean().item()


def test_power_posterior_discounts_the_labels():
    z, y = _overlap_data()
    t_default, n1, s1 = _power_refit(z, y)
    t_one, n1b, _ = _power_refit(z, y, 1.0)
    assert t_default == t_one and n1 == n1b                  # eta = 1 is the Bayesian refit, bit for bit
    _, n_q, s_q = _power_refit(z, y, 0.25)
    # at the optimum E_q[log lik] is non-decreasing in eta ((eta2 - eta1)(a2 - a1) >= 0 from the
    # two optimality conditions): a quarter of the likelihood fits the labels less, and is wider
    assert n_q < n1 - 5.0
    assert s_q > 1.2 * s1
    with pytest.raises(ValueError, match="likelihood_power"):
        refit_head_posterior(BayesianCategoricalHeadModule(2, 3).double(), z, z, y, steps=1, likelihood_power=0.0)
