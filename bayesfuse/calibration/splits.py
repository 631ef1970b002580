"""Patient-level train / tune / calibration / test splits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import CalibrationWarning, subset_posterior
from bayesfuse.exceptions import DataError

__all__ = ["DEFAULT_FRACTIONS", "make_splits", "subset_posterior"]

DEFAULT_FRACTIONS = {"train": 0.6, "tune": 0.1, "calibration": 0.15, "test": 0.15}
_MISSING = "<missing label>"


def _allocate(size: int, fractions: np.ndarray, surplus: np.ndarray | None = None) -> np.ndarray:
    """Largest-remainder counts summing to ``size``, >= 1 per split when ``size >= n_splits``.

    ``surplus`` (n_splits,): patients each split already has beyond its share in earlier strata;
    equal remainders go to the split with the smallest surplus (then the first), so with equal
    fractions the remainders rotate across strata instead of always landing in the first split.
    """
    ideal = size * fractions
    counts = np.floor(ideal).astype(int)
    rest = size - counts.sum()
    if rest:
        tie = np.zeros(len(fractions)) if surplus is None else surplus
        frac = np.round(ideal - counts, 12)               # remainders equal up to rounding tie
        counts[np.lexsort((np.arange(len(fractions)), tie, -frac))[:rest]] += 1
    if size >= len(fractions):
        while (counts == 0).any():
            counts[np.argmax(counts)] -= 1
            counts[np.flatnonzero(counts == 0)[0]] += 1
    return counts


def make_splits(ids, labels=None, fractions: dict[str, float] | None = None, seed: int = 0) -> pd.Series:
    """Assign each patient to one split (all samples of a patient go to the same split).

    Parameters
    ----------
    ids : array-like, shape (n,)
        Patient ids (repeated ids, e.g. several samples of one patient, share a split).
    labels : pandas.Series or array-like, optional
        Class per patient for stratification: a Series indexed by id, or an array aligned
        with ``ids``. Missing labels form their own stratum.
    fractions : dict[str, float], optional
        Split name -> fraction (positive, summing to 1). Default
        ``{"train": 0.6, "tune": 0.1, "calibration": 0.15, "test": 0.15}``.
    seed : int
        Seed of the shuffling.

    Returns
    -------
    pandas.Series, indexed by patient id (in the order of ``ids``), named ``"split"``
        Split name of each patient. Within each stratum counts follow ``fractions``
        (largest remainder) and every split gets >= 1 patient when the stratum has at
        least as many patients as there are splits (otherwise a warning).
    """
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions:
        raise ValueError("fractions is empty; give e.g. {'train': 0.7, 'test': 0.3}.")
    fr = np.array(list(fractions.values()), dtype=float)
    if (fr <= 0).any() or not np.isfinite(fr).all():
        raise ValueError(f"fractions {fractions} must all be positive; drop splits you do not need.")
    if abs(fr.sum() - 1) > 1e-8:
        raise ValueError(f"fractions {fractions} sum to {fr.sum():.6g}; they must sum to 1.")
    ids_arr = np.asarray(list(ids), dtype=object)
    if len(ids_arr) == 0:
        raise DataError("ids is empty.")
    if pd.isna(pd.Series(ids_arr)).any():
        raise DataError("ids contain missing values; every sample needs a patient id.")
    uniq = pd.unique(ids_arr)

    if labels is None:
        strata = pd.Series("all", index=uniq, dtype=object)
    else:
        if isinstance(labels, pd.Series):
            missing = pd.Index(uniq).difference(labels.index)
            if len(missing):
                raise DataError(f"{len(missing)} id(s) have no entry in labels (e.g. {missing[:5].tolist()}); "
                                "labels are aligned by patient id (use NaN for unknown labels).")
            lab = labels[~labels.index.duplicated()].reindex(uniq)
        else:
            arr = np.asarray(labels, dtype=object)
            if len(arr) != len(ids_arr):
                raise DataError(f"labels has length {len(arr)} but ids has {len(ids_arr)}; pass a Series "
                                "indexed by id or an array aligned with ids.")
            lab = pd.Series(arr, index=ids_arr)
            lab = lab[~lab.index.duplicated()].reindex(uniq)
        strata = lab.astype(object).where(lab.notna(), _MISSING)

    rng = np.random.default_rng(seed)
    names = np.asarray(list(fractions), dtype=object)
    assign = pd.Series(index=pd.Index(uniq), dtype=object)
    small = []
    surplus = np.zeros(len(fr))
    for key in sorted(pd.unique(strata.to_numpy()), key=str):
        members = strata.index[(strata == key).to_numpy()].to_numpy()
        members = members[rng.permutation(len(members))]
        counts = _allocate(len(members), fr, surplus)
        surplus += counts - len(members) * fr
        if len(members) < len(fr):
            small.append(key)
        assign.loc[members] = np.repeat(names, counts)
    if small and labels is not None:
        warnings.warn(f"Strata {small[:10]} have fewer patients than splits ({len(fr)}); some splits get none "
                      "of them.", CalibrationWarning, stacklevel=2)
    out = pd.Series(assign.reindex(ids_arr).to_numpy(), index=pd.Index(ids_arr, name="sample_id"), name="split")
    return out
