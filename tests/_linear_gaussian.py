"""Shared linear-Gaussian fixture of the imputation tests (not a test module).

Two modalities ``a`` (4 features) and ``b`` (3) generated from ``z ~ N(0, I_2)`` as
``x_m = z W_m + B_m + SIGMA_m eps``. The loading rows are orthogonal within each modality
(``W W^T`` diagonal), so each modality's exact likelihood factor in ``z`` is a diagonal Gaussian:
a ``hidden=0`` float64 FusionModel whose encoders/decoders are set to these maps has the exact
posterior as its product of experts, and its imputation must equal the exact conditional.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import bayesfuse as bf

D = 2
W = {"a": np.array([[2.0, 0.0, 1.0, 0.0], [0.0, 1.5, 0.0, -1.0]]),
     "b": np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.5]])}
B = {"a": np.array([5.0, -3.0, 10.0, 0.0]), "b": np.array([1.0, 20.0, -4.0])}
SIGMA = {"a": 0.7, "b": 0.5}


def simulate(n: int, seed: int, id_prefix: str = "p") -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """Frames ``{"a": (n, 4), "b": (n, 3)}`` indexed ``f"{id_prefix}{i}"``, and the latent ``z`` (n, 2)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, D))
    ids = [f"{id_prefix}{i}" for i in range(n)]
    frames = {}
    for m in W:
        x = z @ W[m] + B[m] + SIGMA[m] * rng.standard_normal((n, W[m].shape[1]))
        frames[m] = pd.DataFrame(x, index=ids, columns=[f"{m}{j}" for j in range(x.shape[1])])
    return frames, z


def softplus_inv(y: np.ndarray) -> np.ndarray:
    return y + np.log(-np.expm1(-y))


def analytic_model(n_fit: int = 300, inflate: float = 1.0) -> bf.FusionModel:
    """A hidden=0 float64 model whose encoders/decoders are the exact linear-Gaussian maps.

    Preprocessing is fitted on ``simulate(n_fit, seed=1)``. ``inflate`` multiplies the loadings of
    decoder ``b`` (1 = exactly specified; > 1 = over-dispersed imputations of ``b``).
    """
    frames, _ = simulate(n_fit, seed=1)
    model = bf.FusionModel(bf.MultiModalData.from_frames(frames), latent_dim=D, hidden=0, encoder_dropout=0.0,
                           device="cpu", dtype="float64")
    module = model._build_module()
    with torch.no_grad():
        for m in W:
            tf = model.transforms[m]
            s, c = tf.scale, tf.center
            assert not tf.log1p.any()
            dec = module.decoders[m]
            dec.net[0].weight.copy_(torch.as_tensor((W[m] * (inflate if m == "b" else 1.0) / s).T))
            dec.net[0].bias.copy_(torch.as_tensor((B[m] - c) / s))
            dec.raw_scale.copy_(torch.as_tensor(softplus_inv(SIGMA[m] / s - 1e-3) - 0.5413))
            lam = (W[m] @ W[m].T) / SIGMA[m] ** 2  # expert precision, diagonal by construction
            assert np.allclose(lam, np.diag(np.diag(lam)))
            a = np.linalg.solve(W[m] @ W[m].T, W[m])  # expert mean = a @ (x - b)
            enc = module.encoders[m].net[0]
            weight = np.zeros((2 * D, W[m].shape[1]))
            bias = np.zeros(2 * D)
            weight[:D] = a * s  # x = s * x_std + c
            bias[:D] = a @ (c - B[m])
            bias[D:] = softplus_inv(1 / np.sqrt(np.diag(lam)) - 1e-3)
            enc.weight.copy_(torch.as_tensor(weight))
            enc.bias.copy_(torch.as_tensor(bias))
    model.module = module.eval()
    return model


def exact_conditional(x_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact p(x_b | x_a): mean (n, F_b), covariance (F_b, F_b) (same for every patient)."""
    lam = W["a"] @ W["a"].T / SIGMA["a"] ** 2
    cov_z = np.linalg.inv(np.eye(D) + lam)
    mu_z = (x_a - B["a"]) @ W["a"].T / SIGMA["a"] ** 2 @ cov_z
    return mu_z @ W["b"] + B["b"], W["b"].T @ cov_z @ W["b"] + SIGMA["b"] ** 2 * np.eye(3)
