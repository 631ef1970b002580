"""Fitting latent OOD scores from a fitted model and its training patients."""

from __future__ import annotations

import numpy as np

from bayesfuse._rng import seeded_rng
from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import DataError
from bayesfuse.posterior.ood import LatentMahalanobis

__all__ = ["latent_mahalanobis", "reconstruction_elbo"]


def latent_mahalanobis(model, data: MultiModalData, head: str, shrinkage: float = 1e-3) -> LatentMahalanobis:
    """Class-conditional latent Mahalanobis OOD score fitted on ``data`` (normally the training patients).

    Predicts ``data`` once to get the fused posterior mean of ``z`` per patient (shape
    ``(n_patients, latent_dim)``) and fits class means and a tied covariance on it with the
    labels of target column ``head``.

    Parameters
    ----------
    model : FusionModel
        Fitted model.
    data : MultiModalData
        Labelled patients defining "in distribution" (use the training patients, never the
        calibration or test patients).
    head : str
        Target column holding the class labels.
    shrinkage : float
        Relative ridge on the tied covariance.

    Returns
    -------
    LatentMahalanobis
        Callable ``f(post, head) -> (n_patients,)``, usable as ``Abstainer(ood_score=...)``.
    """
    if head not in data.targets.columns:
        raise DataError(f"No target column {head!r}; target columns are {list(data.targets.columns)}.")
    post = model.predict(data, num_samples=1, seed=0, return_latent=False)
    return LatentMahalanobis.from_posterior(post, data.targets[head], shrinkage=shrinkage)


def reconstruction_elbo(model, data: MultiModalData, num_samples: int = 16, seed: int = 0,
                        per_feature: bool = True, batch_size: int = 1024) -> np.ndarray:
    """Per-patient ELBO of the present modalities (labels not used): an input-space OOD score.

    ``ELBO_i = E_q[sum_m presence_im log p(x_im | z)] - KL(q(z | x_i) || p(z))``, estimated with
    ``num_samples`` draws of ``z`` from the fused posterior (the head terms are left out, so no
    label is needed). A patient whose measured profile the decoders cannot reproduce (e.g. a
    tumour type absent from training) gets a low ELBO.

    Parameters
    ----------
    model : FusionModel
        Fitted model.
    data : MultiModalData
        Patients to score.
    num_samples : int
        Monte-Carlo draws of ``z`` per patient.
    seed : int
        Seeds the draws (the global RNG state is left untouched).
    per_feature : bool
        Divide by the number of observed feature cells of the patient (comparable across
        missingness patterns).
    batch_size : int
        Patients per chunk.

    Returns
    -------
    numpy.ndarray, shape (n_patients,)
        ``-ELBO`` (per observed feature when ``per_feature``): higher = more unusual, in
        ``data.sample_ids`` order. As an Abstainer gate:
        ``PatientScores(pd.Series(scores, index=data.sample_ids), name="-ELBO")``.
    """
    import torch  # noqa: PLC0415

    from bayesfuse.nn.decoders import decoder_log_likelihood  # noqa: PLC0415

    module = model._check_fitted()
    if int(num_samples) < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1.")
    module.eval()
    store = model._store(data, strict_targets=False)
    out = []
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.no_grad(), seeded_rng(seed, devices):
        for start in range(0, store.n, int(batch_size)):
            idx = torch.arange(start, min(store.n, start + int(batch_size)), device=model.device)
            batch = store.batch(idx)
            loc, scale, _ = module.posterior(batch)
            eps = torch.randn((int(num_samples), *loc.shape), dtype=loc.dtype, device=loc.device)
            z = loc + scale * eps  # (S, B, D)
            # log p(z) - log q(z): constants cancel, (z - loc) / scale = eps
            elbo = (0.5 * (eps.square() - z.square()) + scale.log()).sum(-1)  # (S, B)
            cells = torch.zeros(loc.shape[0], dtype=loc.dtype, device=loc.device)
            for i, m in enumerate(module.modalities):
                ll = decoder_log_likelihood(module.likelihoods[m], module.decoders[m](z), batch.observed[m],
                                            batch.cell_mask[m], batch.library[m])
                elbo = elbo + ll * batch.presence[i]
                cells = cells + batch.cell_mask[m].sum(-1) * batch.presence[i]
            score = -elbo.mean(0)
            if per_feature:
                score = score / cells.clamp_min(1.0)
            out.append(score.double().cpu())
    return torch.cat(out).numpy()
