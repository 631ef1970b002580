"""Product of experts: closed form, masking = dropping, order invariance, prior fallback."""

import numpy as np
import pytest
import torch

from bayesfuse.module.fusion import product_of_experts


def _numpy_poe(locs, scales, prior_scale=1.0):
    """Closed-form product of independent Gaussians (per dimension), prior N(0, s0^2) included."""
    prec = 1 / prior_scale**2 + sum(1 / s**2 for s in scales)
    mean = sum(m / s**2 for m, s in zip(locs, scales)) / prec
    return mean, 1 / np.sqrt(prec)


@pytest.fixture
def experts():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    scale = torch.rand(3, 5, 4, generator=g, dtype=torch.float64) + 0.2
    return loc, scale


def test_poe_matches_closed_form(experts):
    loc, scale = experts
    mean, sd, prec = product_of_experts(loc, scale, torch.ones(3, 5, dtype=torch.float64))
    ref_mean, ref_sd = _numpy_poe(list(loc.numpy()), list(scale.numpy()))
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-12)
    np.testing.assert_allclose(sd.numpy(), ref_sd, rtol=1e-12)
    np.testing.assert_allclose(prec.numpy(), 1 / scale.numpy() ** 2, rtol=1e-12)


def test_masking_equals_dropping(experts):
    loc, scale = experts
    mask = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 0, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.float64)
    mean, sd, prec = product_of_experts(loc, scale, mask)
    for n in range(5):
        keep = mask[:, n].bool()
        ref_mean, ref_sd = _numpy_poe(list(loc[keep, n].numpy()), list(scale[keep, n].numpy()))
        np.testing.assert_allclose(mean[n].numpy(), ref_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(sd[n].numpy(), ref_sd, rtol=1e-12)
    assert (prec[~mask.bool()] == 0).all()


def test_no_expert_gives_prior(experts):
    loc, scale = experts
    mean, sd, _ = product_of_experts(loc, scale, torch.zeros(3, 5, dtype=torch.float64))
    assert torch.equal(mean, torch.zeros_like(mean))
    assert torch.equal(sd, torch.ones_like(sd))


def test_order_invariance(experts):
    loc, scale = experts
    mask = (torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) > 0.3).double()
    perm = torch.tensor([2, 0, 1])
    a = product_of_experts(loc, scale, mask)
    b = product_of_experts(loc[perm], scale[perm], mask[perm])
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a[1], b[1], rtol=1e-12, atol=1e-14)


def test_sharper_expert_dominates():
    loc = torch.tensor([[[5.0]], [[-5.0]]], dtype=torch.float64)
    scale = torch.tensor([[[0.01]], [[10.0]]], dtype=torch.float64)
    mean, sd, _ = product_of_experts(loc, scale, torch.ones(2, 1, dtype=torch.float64))
    assert abs(mean.item() - 5.0) < 1e-2
    assert sd.item() < 0.0101
