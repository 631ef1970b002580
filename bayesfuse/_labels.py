"""Class labels as text: the one place that decides how a label value becomes a class name.

A categorical head's classes are the *text* of its label column, exactly as a CSV shows it:
a column of ``0`` / ``1`` gives the classes ``"0"`` / ``"1"`` whether pandas parsed it as
integers, as floats (a 0/1 column with blank cells is read as ``0.0`` / ``1.0``) or as
strings. Labels handed back by a user are matched against the classes by the same rule, so
``Abstainer.fit(post, labels)`` accepts labels read from ``targets.csv`` with or without
``dtype=str``. No torch, no pandas beyond ``isna``: every layer may import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["label_text", "class_list", "label_codes"]


def label_text(value) -> str | None:
    """Class name of one label value (``None`` for a missing label).

    ``"S1"`` -> ``"S1"`` (strings are kept exactly), ``1`` / ``np.int64(1)`` / ``1.0`` -> ``"1"``,
    ``2.5`` -> ``"2.5"``, ``True`` -> ``"True"``, NaN / None -> ``None``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else repr(v)
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _numeric(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sort_key(text: str):
    v = _numeric(text)
    return (0, v, text) if v is not None else (1, 0.0, text)


def class_list(values) -> list[str]:
    """Sorted unique class names of label values (missing labels dropped).

    Numeric-looking names sort by value (``"2"`` before ``"10"``), others alphabetically after them.
    """
    seen = {t for t in (label_text(v) for v in values) if t is not None}
    return sorted(seen, key=_sort_key)


def label_codes(values, classes: Sequence[str]) -> np.ndarray:
    """Integer codes of label values given the ordered classes; -1 = missing, -2 = not a class.

    A label matches a class when their texts are equal, or, failing that, when both read as the
    same number (``"1.0"`` matches the class ``"1"``).

    Parameters
    ----------
    values : array-like, shape (n,)
    classes : sequence of str, length C

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    classes = [label_text(c) for c in classes]
    exact = {c: i for i, c in enumerate(classes)}
    numeric = {}
    for i, c in enumerate(classes):
        v = _numeric(c)
        if v is not None:
            numeric.setdefault(v, i)
    arr = np.asarray(values, dtype=object).ravel()
    out = np.empty(len(arr), dtype=np.int64)
    for j, value in enumerate(arr):
        t = label_text(value)
        if t is None:
            out[j] = -1
        elif t in exact:
            out[j] = exact[t]
        else:
            v = _numeric(t)
            out[j] = numeric.get(v, -2) if v is not None else -2
    return out
