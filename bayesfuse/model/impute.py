"""Variational imputation of missing modalities (the torch side of :meth:`FusionModel.impute`).

For patient n and modality m the imputation is the posterior predictive of the decoder under
the fused posterior of the modalities the patient has::

    z ~ q(z | x_present) = PoE(prior, experts of the present modalities)
    x_m ~ p(x_m | z)     (Gaussian noise, Bernoulli draws, Poisson / NB counts)

then mapped back to original units with :meth:`ModalityTransform.to_original`. Count draws
need a library size: a patient's own row total where it has the modality, otherwise the
training median library (the patient's sequencing depth is unknown).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesfuse._rng import seeded_rng
from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import ArgumentError, DataError, InputTypeError, NoModalityWarning
from bayesfuse.posterior.imputation import Imputation

__all__ = ["decoder_space_draws", "impute", "sample_decoder"]


def sample_decoder(likelihood: str, params: dict[str, torch.Tensor], library: torch.Tensor) -> torch.Tensor:
    """One draw of ``x ~ p(x | params)`` per leading index, in decoder space.

    Parameters
    ----------
    likelihood : {"gaussian", "bernoulli", "poisson", "negbinom"}
    params : dict of Tensor (S, B, F)
        Output of :class:`bayesfuse.nn.Decoder` for ``z`` of shape (S, B, D).
    library : Tensor (B,)
        Library size per patient (count likelihoods; ignored otherwise).

    Returns
    -------
    Tensor (S, B, F)
        Standardised values (Gaussian), 0/1 (Bernoulli) or counts.
    """
    if likelihood == "gaussian":
        loc, scale = params["loc"], params["scale"]
        return loc + scale * torch.randn_like(loc)
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.sigmoid(params["logits"]))
    log_mu = params["log_rate_share"] + torch.log(library).unsqueeze(-1)
    if likelihood == "poisson":
        return torch.poisson(torch.exp(log_mu))
    theta = torch.exp(params["log_theta"]).expand_as(log_mu)
    # NB(mean mu, inverse dispersion theta) = Poisson(Gamma(shape theta, rate theta / mu)).
    rate = torch.distributions.Gamma(theta, theta * torch.exp(-log_mu)).sample()
    return torch.poisson(rate)


def _recalibrations(model: Any, modalities: Sequence[str], calibrated: bool | None) -> dict:
    """The fitted :class:`ImputationRecalibration` records that ``impute`` applies."""
    fitted = getattr(model, "imputation_calibration_", None) or {}
    explicit = calibrated is True
    if calibrated is None:
        calibrated = bool(fitted)
    if not calibrated:
        return {}
    if not fitted:
        raise ArgumentError("impute(calibrated=True) needs a recalibration; call model.calibrate_imputation() first "
                         "(or pass calibrated=None / False).")
    uncovered = [m for m in modalities if m not in fitted and model.module.likelihoods.get(m) == "gaussian"]
    if explicit and uncovered:
        warnings.warn(f"impute(calibrated=True): no recalibration was fitted for Gaussian modalit"
                      f"{'y' if len(uncovered) == 1 else 'ies'} {uncovered}; their draws are the raw posterior "
                      f"predictive. Call model.calibrate_imputation(modalities={uncovered!r}) to cover them "
                      "(Imputation.extra['recalibrated'] lists the covered ones).", UserWarning, stacklevel=3)
    return {m: fitted[m] for m in modalities if m in fitted}


def decoder_space_draws(model: Any, store, modalities: Sequence[str], num_samples: int, seed: int,
                        batch_size: int, libraries: dict[str, torch.Tensor], recalibrations: dict | None = None
                        ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """Posterior-predictive draws in decoder space, chunk by chunk.

    Returns ``(draws, probabilities, means)``: per modality lists of chunks of the draws
    (S, B, F), of the Rao-Blackwellised P(x = 1) (B, F; Bernoulli only) and of the predictive
    mean ``mu = E_z[loc(z)]`` (B, F; Gaussian only). A modality in ``recalibrations`` (Gaussian)
    has its draws replaced by ``b mu + s (x - mu)`` (``x`` re-centred on ``mu``) for the patients that lack it
    (:mod:`bayesfuse.posterior.imputation_calibration`); patients that have the modality
    (NaN cells, ``reconstruct``) keep the uncalibrated draws.
    """
    module = model.module
    S, N = int(num_samples), store.n
    mod_index = {m: i for i, m in enumerate(model.modalities)}
    recalibrations = recalibrations or {}
    recal_t = {m: (torch.as_tensor(r.slope, dtype=model.dtype, device=model.device), float(r.spread))
               for m, r in recalibrations.items() if module.likelihoods[m] == "gaussian"}
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    prob_chunks: dict[str, list[np.ndarray]] = {m: [] for m in modalities if module.likelihoods[m] == "bernoulli"}
    mean_chunks: dict[str, list[np.ndarray]] = {m: [] for m in modalities if module.likelihoods[m] == "gaussian"}
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    # Weight-uncertainty modes: encoder weights / dropout masks are drawn once per draw and shared by
    # every patient and chunk, exactly as in FusionModel.predict.
    draw_mode = hasattr(module, "prediction_draws")
    with seeded_rng(seed, devices), (module.prediction_draws(S) if draw_mode else contextlib.nullcontext()):
        for start in range(0, N, int(batch_size)):
            idx = torch.arange(start, min(N, start + int(batch_size)), device=model.device)
            batch = store.batch(idx)
            loc, scale, _ = module.posterior_draws(batch) if draw_mode else module.posterior(batch)
            b, d = loc.shape[-2], loc.shape[-1]   # loc: (B, D), or (S, B, D) with per-draw weights
            z = loc + scale * torch.randn((S, b, d), dtype=loc.dtype, device=loc.device)
            for m in modalities:
                params = module.decoders[m](z)
                lib = libraries[m].index_select(0, idx) if m in libraries else batch.library[m]
                x = sample_decoder(module.likelihoods[m], params, lib)
                if m in mean_chunks:
                    mu = params["loc"].mean(0)
                    mean_chunks[m].append(mu.double().cpu().numpy())
                    if m in recal_t:
                        slope, spread = recal_t[m]
                        absent = (batch.presence[mod_index[m]] == 0).view(1, -1, 1)
                        # re-centred deviations (posterior.imputation_calibration.recentre): the draws
                        # average exactly to b mu, the Monte-Carlo error of their mean is not amplified
                        dev = (x - x.mean(0)) * (S / (S - 1.0)) ** 0.5 if S > 1 else x - mu
                        x = torch.where(absent, slope * mu + spread * dev, x)
                chunks[m].append(x.double().cpu().numpy())
                if m in prob_chunks:  # Rao-Blackwellised P(x = 1): decoder probability averaged over z
                    prob_chunks[m].append(torch.sigmoid(params["logits"]).mean(0).double().cpu().numpy())
    return chunks, prob_chunks, mean_chunks


@torch.no_grad()
def impute(model: Any, data: MultiModalData, modalities: Sequence[str] | None = None,
           num_samples: int = 200, seed: int = 0, reconstruct: bool = False,
           batch_size: int = 1024, calibrated: bool | None = None) -> Imputation:
    """Posterior-predictive draws of ``modalities`` for every patient of ``data``.

    See :meth:`bayesfuse.FusionModel.impute` for the parameters.
    """
    module = model._check_fitted()
    module.eval()
    if not isinstance(data, MultiModalData):
        raise InputTypeError("data must be a bf.MultiModalData.")
    if int(num_samples) < 1:
        raise ArgumentError(f"num_samples={num_samples} must be >= 1.")
    if int(batch_size) < 1:
        raise ArgumentError(f"batch_size={batch_size} must be >= 1.")
    if modalities is None:
        modalities = model.modalities
    if isinstance(modalities, str):
        modalities = [modalities]
    modalities = list(modalities)
    unknown = [m for m in modalities if m not in model.transforms]
    if unknown:
        raise DataError(f"Cannot impute {unknown}: the model knows the modalities {model.modalities}.")
    if not modalities:
        raise ArgumentError("modalities is empty; name at least one modality to impute.")
    store = model._store(data, strict_targets=False)
    presence = data.presence.reindex(columns=model.modalities, fill_value=False).astype(bool)
    n_none = int((~presence.any(axis=1)).sum())
    if n_none:
        warnings.warn(f"{n_none} patient(s) have no modality; their imputations are draws from the prior "
                      "predictive (flagged in Imputation.no_modality).", NoModalityWarning, stacklevel=3)
    unmodelled = {m: [c for c in model.transforms[m].train_columns if c not in set(model.transforms[m].features)]
                  for m in modalities}
    unmodelled = {m: cols for m, cols in unmodelled.items() if cols}
    if unmodelled:
        desc = ", ".join(f"{m}: {len(c)} of {len(model.transforms[m].train_columns)}" for m, c in unmodelled.items())
        warnings.warn(f"Only the model's features are imputed; training columns outside the feature selection "
                      f"are not ({desc}; listed in Imputation.unmodelled_features).", UserWarning, stacklevel=3)

    S, N = int(num_samples), store.n
    mod_index = {m: i for i, m in enumerate(model.modalities)}
    libraries: dict[str, torch.Tensor] = {}
    for m in modalities:
        tf = model.transforms[m]
        if tf.likelihood in ("poisson", "negbinom"):
            has = store.presence[mod_index[m]] > 0
            libraries[m] = torch.where(has, store.library[m], torch.full_like(store.library[m], tf.library_median))
    recal = _recalibrations(model, modalities, calibrated)
    chunks, prob_chunks, _ = decoder_space_draws(model, store, modalities, S, seed, batch_size, libraries, recal)

    draws, observed_mask, features, probs = {}, {}, {}, {}
    ids = data.sample_ids
    for m in modalities:
        tf = model.transforms[m]
        x = tf.to_original(np.concatenate(chunks[m], axis=1))  # (S, N, F)
        mask = np.zeros((N, tf.n_features), dtype=bool)
        if m in data.modality_names and not reconstruct:
            df = data.modality(m)
            if len(df):
                rows = pd.Index(ids).get_indexer(df.index)
                raw = tf.align(df).to_numpy(dtype=np.float64)
                obs = np.isfinite(raw)
                mask[rows] = obs
                full = np.zeros((N, tf.n_features))
                full[rows] = np.where(obs, raw, 0.0)
                x = np.where(mask[None], full[None], x)
                if m in prob_chunks:
                    probs[m] = np.where(mask, full, np.concatenate(prob_chunks[m], axis=0))
        if m in prob_chunks and m not in probs:
            probs[m] = np.concatenate(prob_chunks[m], axis=0)
        draws[m], observed_mask[m], features[m] = x, mask, list(tf.features)
    return Imputation(sample_ids=ids, draws=draws, feature_names=features, observed_mask=observed_mask,
                      likelihoods={m: model.transforms[m].likelihood for m in modalities}, presence=presence,
                      reconstruct=bool(reconstruct), unmodelled_features=unmodelled,
                      library={m: v.double().cpu().numpy() for m, v in libraries.items()}, seed=int(seed),
                      probabilities=probs,
                      extra={"recalibrated": sorted(m for m in recal if module.likelihoods[m] == "gaussian")})

