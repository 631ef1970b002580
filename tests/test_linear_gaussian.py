"""Amortised PoE inference recovers the exact posterior of a linear-Gaussian model.

Model: z ~ N(0, I_2); x_m = W_m^T z + b_m + N(0, s_m^2 I) for two modalities whose loadings
have orthogonal rows, so p(z | x) is Gaussian with DIAGONAL covariance (representable by
the mean-field guide). The decoders are fixed to the truth (in the model's standardised
feature space); only the linear encoders are trained by SVI. The fused posterior must match
the exact one. Tolerances: |mean error| <= 0.1 posterior sd on average (max 0.3),
sd ratio within 3% on average.
"""

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
from bayesfuse.train.svi import TrainConfig, train_svi


def _linear_gaussian_cohort(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    d = 2
    specs = {"a": (12, 1.0), "b": (6, 0.7)}
    frames, truth = {}, {}
    z = rng.standard_normal((n, d))
    ids = np.array([f"p{i}" for i in range(n)])
    for m, (f, s) in specs.items():
        q, _ = np.linalg.qr(rng.standard_normal((f, d)))       # orthonormal columns (f, d)
        w = (q * np.array([1.5, 0.6])).T                         # (d, f), W W^T diagonal
        b = rng.normal(0, 1, f)
        x = z @ w + b + s * rng.standard_normal((n, f))
        frames[m] = pd.DataFrame(x, index=ids, columns=[f"{m}{k}" for k in range(f)])
        truth[m] = (w, b, s)
    return bf.MultiModalData.from_frames(frames), truth, z


def _exact_posterior(data, truth, presence):
    n = data.n_samples
    prec = np.ones((n, 2))
    lin = np.zeros((n, 2))
    for m, (w, b, s) in truth.items():
        has = presence[m]
        x = data.modality(m).reindex(data.sample_ids).to_numpy()
        wwt = np.diag(w @ w.T)
        prec[has] += wwt / s**2
        lin[has] += ((x[has] - b) @ w.T) / s**2
    return lin / prec, 1 / np.sqrt(prec)


def _fix_decoders(model, truth):
    """Set decoders to the true linear maps expressed in standardised feature space."""
    for m, (w, b, s) in truth.items():
        tf = model.transforms[m]
        dec = model.module.decoders[m]
        lin = dec.net[0]
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor((w / tf.scale).T))
            lin.bias.copy_(torch.as_tensor((b - tf.center) / tf.scale))
            target = s / tf.scale - 1e-3
            dec.raw_scale.copy_(torch.as_tensor(np.log(np.expm1(target)) - 0.5413))
        for p in dec.parameters():
            p.requires_grad_(False)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    data, truth, _ = _linear_gaussian_cohort()
    model = bf.FusionModel(data, heads={}, latent_dim=2, hidden=0, encoder_dropout=0.0, dtype="float64")
    model.module = model._build_module()
    _fix_decoders(model, truth)
    store = model._store(data, strict_targets=True)
    gen = torch.Generator().manual_seed(0)
    for lr, epochs in ((1e-2, 150), (1e-3, 100)):  # Robbins-Monro: a decreasing step size settles SVI noise
        cfg = TrainConfig(max_epochs=epochs, batch_size=250, lr=lr, kl_warmup_epochs=0, modality_dropout=0.5,
                          progress=False, patience=10**6, min_epochs=0, num_particles=4)
        train_svi(model.module, store, None, cfg, gen)
    return model, data, truth


@pytest.mark.parametrize("drop", [None, "a", "b"])
def test_fused_posterior_matches_exact(fitted, drop):
    model, data, truth = fitted
    test = data if drop is None else data.drop_modalities([drop])
    post = model.predict(test, num_samples=2)
    presence = {m: (m != drop) * np.ones(data.n_samples, bool) for m in truth}
    mean, sd = _exact_posterior(data, truth, presence)
    err = np.abs(post.latent_loc - mean) / sd
    ratio = post.latent_scale / sd
    assert err.mean() < 0.1 and err.max() < 0.3, (err.mean(), err.max())
    assert abs(ratio.mean() - 1) < 0.03 and np.abs(ratio - 1).max() < 0.06, (ratio.mean(), ratio.min(), ratio.max())


def test_untrained_encoders_do_not_match(fitted):
    """Negative control: the same check fails for freshly initialised encoders."""
    model, data, truth = fitted
    fresh = bf.FusionModel(data, heads={}, latent_dim=2, hidden=0, encoder_dropout=0.0, dtype="float64")
    torch.manual_seed(1)
    fresh.module = fresh._build_module()
    _fix_decoders(fresh, truth)
    post = fresh.predict(data, num_samples=2)
    mean, sd = _exact_posterior(data, truth, {m: np.ones(data.n_samples, bool) for m in truth})
    err = np.abs(post.latent_loc - mean) / sd
    assert err.mean() > 0.3
