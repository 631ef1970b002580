"""Encoding of target columns for each head (the only place labels become integers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesfuse._labels import class_list, label_codes, label_text
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Categorical, Head, Survival

__all__ = ["fit_head_spec", "encode_targets"]


def fit_head_spec(key: str, spec: Head, targets: pd.DataFrame, n_features: int) -> Head:
    """Check the target columns exist and learn what the head needs (class labels, time grid, weight)."""
    from bayesfuse.heads import resolve_weight  # noqa: PLC0415

    spec.weight = resolve_weight(spec, n_features)
    missing = [c for c in spec.target_columns() if c not in targets.columns]
    if missing:
        raise DataError(f"Head {key!r} needs target column(s) {missing}, which the data lack "
                        f"(targets columns: {list(targets.columns)}). Add them or remove the head.")
    if isinstance(spec, Categorical):
        labels = targets[spec.column].dropna()
        if labels.empty:
            raise DataError(f"Head {key!r}: column {spec.column!r} has no known label in the training data.")
        seen = class_list(pd.unique(labels))   # class names = the labels' text ("0"/"1" for a 0/1 column)
        if spec.classes is None:
            spec.classes = seen
        else:
            given = [label_text(c) for c in spec.classes]
            if None in given or len(set(given)) != len(given):
                raise DataError(f"Head {key!r}: classes={spec.classes} has a missing or repeated class; "
                                "list each class once.")
            spec.classes = given
            codes = label_codes(seen, given)
            unknown = [s for s, c in zip(seen, codes) if c < 0]
            if unknown:
                raise DataError(f"Head {key!r}: labels {unknown[:5]} are not among classes={spec.classes}. "
                                "Add them to classes= or set those labels to NaN (unknown).")
        if len(spec.classes) < 2:
            raise DataError(f"Head {key!r}: a categorical head needs >= 2 classes, found {spec.classes}.")
    elif isinstance(spec, Survival):
        from bayesfuse.model.survival_targets import fit_survival_spec  # noqa: PLC0415

        fit_survival_spec(key, spec, targets)
    return spec


def encode_targets(key: str, spec: Head, targets: pd.DataFrame | None, n: int,
                   strict: bool) -> dict[str, np.ndarray]:
    """Numeric arrays of one head's targets for ``n`` patients (unknown = masked).

    ``strict`` (training data): labels outside the head's classes are an error. At predict
    time targets are optional and ignored by the predictions.
    """
    if isinstance(spec, Categorical):
        y = np.full(n, -1, dtype=np.int64)
        if targets is not None and spec.column in targets.columns:
            codes = label_codes(targets[spec.column].to_numpy(dtype=object), spec.classes)
            if strict and (codes == -2).any():
                bad = class_list(targets[spec.column].to_numpy(dtype=object)[codes == -2])[:5]
                raise DataError(f"Head {key!r}: unknown class label(s) {bad}; known classes are {spec.classes}.")
            codes[codes == -2] = -1
            y[:] = codes
        return {"y": y}
    from bayesfuse.model.survival_targets import encode_survival  # noqa: PLC0415

    return encode_survival(key, spec, targets, n, strict)
