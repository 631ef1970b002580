"""Fitting latent OOD scores from a fitted model and its training patients."""

from __future__ import annotations

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import DataError
from bayesfuse.posterior.ood import LatentMahalanobis

__all__ = ["latent_mahalanobis"]


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
