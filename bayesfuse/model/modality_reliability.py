"""Fit each modality's reliability: a multiplier of its expert's precision in the product of experts.

An expert trained on a few hundred patients can be over-confident on new ones. A modality with
thousands of uninformative features is the typical case: its encoder memorises the training
patients, its expert claims a precise ``z`` for a new patient, and the product of experts
trusts it. On the cohort zoo's ``noise`` rows (2,000 noise features added to one modality),
hiding that modality at prediction lowered the test NLL by 0.03-0.18 (docs/model.md, "Modality
reliability").

After SVI, :func:`fit_modality_reliability` chooses ``r_m`` per modality on held-out labelled patients
(the fit's early-stopping validation patients): the fused precision becomes
``1 + sum_m mask_m r_m / s_m^2`` and the fused mean weighs each expert by ``r_m / s_m^2``
(:func:`bayesfuse.module.fusion.product_of_experts` with ``mask * r``). ``r_m`` is the MAP of
the categorical heads' posterior-predictive log-likelihood of those patients under the prior
``log r_m ~ N(0, prior_sd^2)``, searched by coordinate descent on the grid :data:`LOG_GRID`
(two sweeps). Training is unchanged (``r = 1`` while fitting), and ``r = 1`` whenever the model
has fewer than two modalities or no categorical head.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from bayesfuse._labels import label_codes
from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import NoModalityWarning
from bayesfuse.heads import Categorical

__all__ = ["fit_modality_reliability", "LOG_GRID", "PRIOR_SD"]

#: candidate values of ``log r_m`` (r = 1, 1/2, 1/4, 1/10, 1/30, 1/100): experts are only ever discounted
LOG_GRID = tuple(float(v) for v in np.log([1.0, 0.5, 0.25, 0.1, 1 / 30, 0.01]))
#: prior sd of ``log r_m`` (cohort zoo, docs/model.md: sd 1 and 2 moved r on simulator rows whose modalities all carry signal)
PRIOR_SD = 0.5


def _nll(model, data: MultiModalData, heads: list[str], codes: dict[str, np.ndarray], num_samples: int,
         seed: int) -> float:
    """Summed posterior-predictive NLL of the labelled patients over the categorical ``heads``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoModalityWarning)
        post = model.predict(data, num_samples=num_samples, seed=seed, return_latent=False, calibrated=False)
    total = 0.0
    for h in heads:
        c = codes[h]
        ok = c >= 0
        p = np.asarray(post.probs(h), dtype=float).mean(axis=0)[np.flatnonzero(ok), c[ok]]
        total -= float(np.log(np.clip(p, 1e-300, None)).sum())
    return total


def fit_modality_reliability(model, data: MultiModalData, num_samples: int = 100, seed: int = 0,
                             prior_sd: float = PRIOR_SD, sweeps: int = 2) -> np.ndarray:
    """Fit and set ``model.module.reliability`` (M,) on labelled held-out ``data``.

    Parameters
    ----------
    model : FusionModel
        A fitted model; its categorical heads are predicted uncalibrated.
    data : MultiModalData
        Labelled patients the SVI fit did not train on.
    num_samples, seed : int
        Posterior draws per patient and their seed (the same draws for every candidate).
    prior_sd : float
        Prior sd of ``log r_m`` (``N(0, prior_sd^2)``).
    sweeps : int
        Coordinate-descent passes over the modalities.

    Returns
    -------
    ndarray, shape (M,)
        ``r_m`` in ``model.modalities`` order (all ones when there is nothing to fit).
    """
    module = model.module
    mods = list(model.modalities)
    rel = module.reliability
    rel.fill_(1.0)
    heads = [h for h, spec in model.heads.items() if isinstance(spec, Categorical)]
    codes = {}
    for h in heads:
        col = model.heads[h].column
        codes[h] = (label_codes(data.targets[col].to_numpy(dtype=object), list(model.heads[h].classes))
                    if col in data.targets.columns else np.full(data.n_samples, -1))
    if len(mods) < 2 or not heads or data.n_samples == 0 or not any((c >= 0).any() for c in codes.values()):
        return rel.detach().cpu().numpy().astype(float)
    log_r = np.zeros(len(mods))

    def objective(values: np.ndarray) -> float:
        with torch.no_grad():
            rel.copy_(torch.as_tensor(np.exp(values), dtype=rel.dtype))
        return _nll(model, data, heads, codes, num_samples, seed) + 0.5 * float(((values / prior_sd) ** 2).sum())

    try:
        best = objective(log_r)
        for _ in range(int(sweeps)):
            moved = False
            for m in range(len(mods)):
                for v in LOG_GRID:
                    if v == log_r[m]:
                        continue
                    trial = log_r.copy()
                    trial[m] = v
                    f = objective(trial)
                    if f < best - 1e-9:
                        best, log_r, moved = f, trial, True
            if not moved:
                break
    except BaseException:
        rel.fill_(1.0)    # never leave a half-searched multiplier in the model
        raise
    with torch.no_grad():
        rel.copy_(torch.as_tensor(np.exp(log_r), dtype=rel.dtype))
    return np.exp(log_r)
