"""Shared helpers of :mod:`bayesfuse.calibration`: label alignment and posterior summaries.

Everything here is numpy / pandas (no torch).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from bayesfuse._labels import label_codes
from bayesfuse.exceptions import BayesFuseWarning, DataError
from bayesfuse.posterior import Posterior
from bayesfuse.posterior._uncertainty import entropy_decomposition

__all__ = [
    "CalibrationWarning",
    "align_labels",
    "mutual_information",
    "missingness_patterns",
    "subset_posterior",
]


class CalibrationWarning(BayesFuseWarning):
    """A calibration guarantee is weaker than asked (nothing certifiable, small pattern, ...)."""


def _ids_index(post: Posterior) -> pd.Index:
    return pd.Index(np.asarray(post.sample_ids, dtype=object), name="sample_id")


def check_posterior(post, head: str) -> None:
    """Raise a clear error when ``post`` is not a Posterior or lacks a categorical ``head``."""
    if not isinstance(post, Posterior):
        raise DataError(
            f"Expected a bayesfuse.Posterior (from model.predict(...)), got {type(post).__name__}."
        )
    if head not in post.heads:
        raise DataError(f"No head {head!r} in this posterior; heads are {sorted(post.heads)}.")
    p = post.probs(head)
    if p.ndim != 3 or p.shape[1] != post.n_patients:
        raise DataError(
            f"post.draws[{head!r}]['probs'] has shape {p.shape}; expected "
            f"(num_samples, n_patients={post.n_patients}, n_classes)."
        )
    ids = _ids_index(post)
    if ids.has_duplicates:
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise DataError(f"Posterior has duplicated sample ids (e.g. {dup}); ids must be unique per patient.")


def align_labels(post: Posterior, labels, head: str, allow_missing: bool = False) -> np.ndarray:
    """Integer class codes of ``labels`` in the patient order of ``post``.

    Parameters
    ----------
    post : Posterior
        Posterior whose ``sample_ids`` define the order.
    labels : pandas.Series
        Class labels indexed by patient id (may contain extra ids; order is irrelevant).
    head : str
        Categorical head whose ``classes`` define the codes.
    allow_missing : bool
        ``True``: NaN labels are allowed and coded -1 (evaluation on partly labelled data);
        ``False`` (calibration): every patient needs a label.

    Returns
    -------
    numpy.ndarray of int, shape (n_patients,)
        ``codes[i]`` is the column of ``post.probs(head)`` holding patient ``i``'s label.

    Notes
    -----
    Ids are compared as strings (``MultiModalData`` stores sample ids as strings), so a label
    Series indexed by integers matches a posterior of the same ids.

    Raises
    ------
    DataError
        On non-Series input, duplicated index, ids of ``post`` missing from ``labels``,
        missing (NaN) labels, or labels that are not among ``post.classes(head)``.
    """
    check_posterior(post, head)
    if not isinstance(labels, pd.Series):
        raise DataError(
            f"labels must be a pandas Series indexed by patient id, got {type(labels).__name__}. "
            "Build one with pd.Series(values, index=patient_ids)."
        )
    labels = pd.Series(labels.to_numpy(), index=pd.Index(labels.index.map(str)))
    if labels.index.has_duplicates:
        dup = labels.index[labels.index.duplicated()].unique()[:5].tolist()
        raise DataError(f"labels has duplicated patient ids (e.g. {dup}); keep one label per patient.")
    ids = pd.Index([str(s) for s in post.sample_ids], name="sample_id")
    missing = ids.difference(labels.index)
    if len(missing):
        raise DataError(
            f"{len(missing)} patient id(s) of the posterior have no label (e.g. {missing[:5].tolist()}). "
            "Labels are aligned by patient id, not by position: pass a Series indexed by the same ids "
            "as post.sample_ids, or subset the posterior to the labelled patients."
        )
    y = labels.reindex(ids)
    known = y.notna().to_numpy()
    if allow_missing and not known.all():
        codes = np.full(len(y), -1, dtype=int)
        codes[known] = align_labels(_subset_for_codes(post, known), y[known], head)
        return codes
    if y.isna().any():
        bad = y.index[y.isna().to_numpy()][:5].tolist()
        raise DataError(
            f"{int(y.isna().sum())} label(s) are missing (NaN) for patients such as {bad}. "
            "Calibration needs a known label for every calibration patient: drop them first."
        )
    classes = pd.Index(post.classes(head))
    codes = label_codes(y.to_numpy(), classes)   # by text: 0, 0.0 and "0" all match the class "0"
    if (codes < 0).any():
        unknown = pd.unique(y.to_numpy()[codes < 0])[:5].tolist()
        raise DataError(
            f"Label(s) {unknown} are not classes of head {head!r} (classes: {classes.tolist()}). "
            "Check spelling/dtype (e.g. 1 vs '1'), or declare them with Categorical(classes=[...])."
        )
    return codes.astype(int)


def _subset_for_codes(post: Posterior, keep: np.ndarray) -> Posterior:
    """Posterior restricted to rows ``keep`` (only ids and classes are read by align_labels)."""
    return subset_posterior(post, np.asarray(post.sample_ids, dtype=object)[keep])


def mean_probs(post: Posterior, head: str) -> np.ndarray:
    """Posterior-predictive class probabilities, shape (n_patients, n_classes)."""
    return np.asarray(post.probs(head), dtype=float).mean(axis=0)


def mutual_information(post: Posterior, head: str) -> np.ndarray:
    """Epistemic uncertainty ``I[y; theta] = H[E p] - E H[p]`` from the draws, shape (n_patients,).

    Mutual information (nats, >= 0) between the prediction and the posterior draws (parameters /
    latent); high when draws disagree, e.g. for patients unlike the training data. Computed by
    :func:`bayesfuse.posterior._uncertainty.entropy_decomposition` (the one implementation).
    """
    return entropy_decomposition(post.probs(head))[2]


def missingness_patterns(post: Posterior) -> pd.Series:
    """Missingness pattern of each patient: tuple of present modality names, in patient order."""
    ids = _ids_index(post)
    pres = post.presence
    if not pres.index.equals(ids):
        missing = ids.difference(pres.index)
        if len(missing):
            raise DataError(
                f"post.presence lacks {len(missing)} patient id(s) (e.g. {missing[:5].tolist()}); "
                "it must be indexed by the same ids as post.sample_ids."
            )
        pres = pres.reindex(ids)
    arr = pres.to_numpy(dtype=bool)
    cols = list(pres.columns)
    pats = [tuple(c for c, b in zip(cols, row) if b) for row in arr]
    return pd.Series(pats, index=ids, name="pattern", dtype=object)


def subset_posterior(post: Posterior, ids) -> Posterior:
    """A new Posterior restricted to (and ordered like) the patient ids ``ids``.

    Parameters
    ----------
    post : Posterior
    ids : array-like of patient ids
        Must all be in ``post.sample_ids``.

    Returns
    -------
    Posterior
        Every per-patient array (draws, latent, presence, ...) is subset on the patient axis.
    """
    index = _ids_index(post)
    ids = np.asarray(list(ids), dtype=object)
    pos = index.get_indexer(ids)
    if (pos < 0).any():
        raise DataError(
            f"{int((pos < 0).sum())} id(s) are not in the posterior (e.g. {ids[pos < 0][:5].tolist()})."
        )
    draws = {h: {k: np.asarray(v)[:, pos] for k, v in d.items()} for h, d in post.draws.items()}
    return dataclasses.replace(
        post,
        sample_ids=np.asarray(post.sample_ids, dtype=object)[pos],
        draws=draws,
        latent=np.asarray(post.latent)[:, pos],
        latent_loc=np.asarray(post.latent_loc)[pos],
        latent_scale=np.asarray(post.latent_scale)[pos],
        presence=post.presence.reindex(pd.Index(ids, name=post.presence.index.name)),
        modality_precision=np.asarray(post.modality_precision)[pos],
        extra=dict(post.extra),
    )
