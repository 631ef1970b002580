"""Hand-written decoder log-likelihoods agree with torch.distributions / scipy."""

import numpy as np
import pytest
import torch
from scipy import stats

from bayesfuse.nn.decoders import Decoder, decoder_log_likelihood
from bayesfuse.nn.encoders import GaussianExpertEncoder


@pytest.fixture
def z():
    return torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _mask(shape, seed=1):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.2).double()


def test_gaussian_ll(z):
    dec = Decoder(3, 5, "gaussian", hidden=8).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    mask = _mask((7, 5))
    p = dec(z)
    got = decoder_log_likelihood("gaussian", p, x, mask, torch.ones(7, dtype=torch.float64))
    ref = (torch.distributions.Normal(p["loc"], p["scale"]).log_prob(x) * mask).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_bernoulli_ll(z):
    dec = Decoder(3, 5, "bernoulli", hidden=8).double()
    x = (torch.rand(7, 5, dtype=torch.float64) > 0.5).double()
    mask = _mask((7, 5))
    p = dec(z)
    got = decoder_log_likelihood("bernoulli", p, x, mask, torch.ones(7, dtype=torch.float64))
    ref = (torch.distributions.Bernoulli(logits=p["logits"]).log_prob(x) * mask).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lik", ["poisson", "negbinom"])
def test_count_ll_matches_scipy(z, lik):
    dec = Decoder(3, 6, lik, hidden=0).double()
    lib = torch.tensor([100.0, 2000.0, 50.0, 1.0, 7.0, 3000.0, 10.0], dtype=torch.float64)
    x = torch.tensor(np.random.default_rng(0).poisson(20, (7, 6)), dtype=torch.float64)
    mask = _mask((7, 6))
    p = dec(z)
    got = decoder_log_likelihood(lik, p, x, mask, lib).detach().numpy()
    mu = (lib[:, None] * p["log_rate_share"].exp()).detach().numpy()
    xn, mn = x.numpy(), mask.numpy()
    if lik == "poisson":
        ref = (stats.poisson.logpmf(xn, mu) * mn).sum(-1)
    else:
        theta = np.exp(p["log_theta"].detach().numpy())
        # scipy nbinom(n=theta, p=theta/(theta+mu)) has mean mu
        ref = (stats.nbinom.logpmf(xn, theta, theta / (theta + mu)) * mn).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_encoder_scale_positive():
    enc = GaussianExpertEncoder(4, 2, hidden=8).double()
    loc, scale = enc(torch.randn(9, 4, dtype=torch.float64) * 100)
    assert loc.shape == (9, 2) and scale.shape == (9, 2)
    assert (scale > 0).all() and torch.isfinite(scale).all()
