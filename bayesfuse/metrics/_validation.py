"""Input checks shared by the metric modules.

Every check raises :class:`bayesfuse.exceptions.DataError` (a ``ValueError``) with a message
that says what is wrong *and* what to do about it.
"""

from __future__ import annotations

import numpy as np

from bayesfuse.exceptions import DataError

PROB_ATOL = 1e-6


def as_float_array(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as a float64 array with the expected number of dimensions, all finite."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric; could not convert it to float ({exc}).") from exc
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        want = " or ".join(str(d) for d in ndims)
        raise DataError(f"{name} must be a {want}-D array, got shape {arr.shape}; reshape it first.")
    if arr.size == 0:
        raise DataError(f"{name} is empty; pass at least one patient.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise DataError(f"{name} contains {bad} NaN or infinite value(s); drop or impute those patients first.")
    return arr


def check_probs(probs, name: str = "probs") -> np.ndarray:
    """Validate class probabilities shaped (n, C): finite, in [0, 1], rows summing to 1."""
    p = as_float_array(probs, name, 2)
    if p.shape[1] < 2:
        raise DataError(f"{name} must have one column per class (C >= 2), got shape {p.shape}.")
    if np.any(p < -PROB_ATOL) or np.any(p > 1 + PROB_ATOL):
        raise DataError(f"{name} has values outside [0, 1]; pass probabilities, not logits "
                        "(apply a softmax first).")
    rows = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(rows - 1.0) > PROB_ATOL)
    if bad.size:
        raise DataError(f"{bad.size} row(s) of {name} do not sum to 1 (e.g. row {bad[0]} sums to "
                        f"{rows[bad[0]]:.6g}); normalise each row or pass softmax outputs.")
    return np.clip(p, 0.0, 1.0)


def check_prob_draws(probs_draws, name: str = "probs_draws") -> np.ndarray:
    """Validate per-draw class probabilities shaped (S, n, C)."""
    p = as_float_array(probs_draws, name, 3)
    check_probs(p.reshape(-1, p.shape[-1]), name)
    return np.clip(p, 0.0, 1.0)


def check_labels(y, n_classes: int, n: int, name: str = "y") -> np.ndarray:
    """Validate integer class codes shaped (n,) in ``0..n_classes-1``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of integer class codes, got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} entries but probs has {n} rows; they must match "
                        "(one label per patient, same order).")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{name} must hold integer class codes; got non-integer floats. "
                            "Use bayesfuse.metrics.encode_labels to turn labels into codes.")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{name} must hold integer class codes, got dtype {arr.dtype}. "
                        "Use bayesfuse.metrics.encode_labels to turn labels into codes.")
    bad = (arr < 0) | (arr >= n_classes)
    if np.any(bad):
        raise DataError(f"{name} has {int(bad.sum())} code(s) outside 0..{n_classes - 1} (e.g. "
                        f"{arr[bad][0]}); codes must index the columns of probs.")
    return arr.astype(np.int64)


def check_same_length(**arrays) -> int:
    """Check that all given 1-D/2-D arrays share their first dimension; return it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise DataError(f"lengths mismatched ({desc}); pass one entry per patient, in the same order.")
    return next(iter(lengths.values()))


def check_binary(x, name: str) -> np.ndarray:
    """Validate a boolean / 0-1 indicator shaped (n,) and return it as bool."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}.")
    if arr.dtype.kind == "b":
        return arr
    try:
        f = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be boolean or 0/1, got dtype {arr.dtype}.") from exc
    if not np.all(np.isin(f, (0.0, 1.0))):
        raise DataError(f"{name} must contain only 0/1 (or True/False); found other values such as "
                        f"{f[~np.isin(f, (0.0, 1.0))][0]!r}.")
    return f.astype(bool)


def check_survival(time, event, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate right-censored survival outcomes: positive finite times (n,), event indicator (n,)."""
    t = as_float_array(time, f"{prefix}time", 1)
    if np.any(t <= 0):
        raise DataError(f"{prefix}time has {int(np.sum(t <= 0))} negative or zero value(s); survival times "
                        "must be > 0 (e.g. add half a day to same-day events, or drop them).")
    e = check_binary(event, f"{prefix}event")
    check_same_length(**{f"{prefix}time": t, f"{prefix}event": e})
    return t, e


def check_times(times, name: str = "times") -> np.ndarray:
    """Validate an evaluation grid: 1-D, finite, > 0, strictly increasing."""
    g = as_float_array(np.atleast_1d(times), name, 1)
    if np.any(g <= 0):
        raise DataError(f"{name} must be > 0; drop time 0 from the grid (S(0) = 1 by definition).")
    if np.any(np.diff(g) <= 0):
        raise DataError(f"{name} must be strictly increasing; sort it and drop duplicates (np.unique).")
    return g


def check_surv(surv, n: int, n_times: int, name: str = "surv") -> np.ndarray:
    """Validate survival probabilities shaped (n, T): in [0, 1]."""
    s = as_float_array(surv, name, 2)
    if s.shape != (n, n_times):
        raise DataError(f"{name} must have shape (n_patients, n_times) = ({n}, {n_times}), got {s.shape}; "
                        "evaluate each patient's survival curve on the `times` grid.")
    if np.any(s < -PROB_ATOL) or np.any(s > 1 + PROB_ATOL):
        raise DataError(f"{name} has values outside [0, 1]; pass survival probabilities S(t), "
                        "not hazards or risks.")
    return np.clip(s, 0.0, 1.0)
