"""Rules shared by the in-memory (:mod:`bayesfuse.data.preprocessing`) and streamed
(:mod:`bayesfuse.data.streaming_fit`) preprocessing fits: likelihood names, count and log1p thresholds, the
encoder-space map and the finish of centre / scale. numpy only; imports nothing of bayesfuse but its exceptions."""

from __future__ import annotations

import warnings

import numpy as np

from bayesfuse.exceptions import DataWarning

LIKELIHOODS = ("gaussian", "bernoulli", "poisson", "negbinom")
_COUNT_MIN_FEATURES = 100
_COUNT_MIN_LIBRARY = 1000.0
_SKEW_LOG1P = 2.0
DEFAULT_MAX_COUNT_FEATURES = 2000


def _finish_center_scale(name: str, cols: list, kept: np.ndarray, center: np.ndarray, scale: np.ndarray,
                         stacklevel: int) -> tuple[np.ndarray, np.ndarray]:
    """Warn about kept columns that are entirely NaN (``center`` NaN), then make ``center`` finite and
    ``scale`` positive (1 where a column is constant or empty). Shared by the in-memory and streamed fits."""
    empty = [cols[k] for k in kept[np.isnan(center)]]
    if empty:
        warnings.warn(f"Modality {name!r}: {len(empty)} feature column(s) are entirely NaN in the training data "
                      f"(e.g. {empty[:5]}); they carry no information and the model cannot learn them "
                      f"(imputations of them are not meaningful). Drop them with "
                      f"data.drop_features({{{name!r}: [...]}}).", DataWarning, stacklevel=stacklevel)
    return np.nan_to_num(center), np.where(np.isfinite(scale) & (scale > 1e-8), scale, 1.0)


def _encoder_space(values: np.ndarray, likelihood: str, log1p: np.ndarray,
                   lib: np.ndarray | None = None) -> np.ndarray:
    """Encoder-space values of ``values`` (n, F): log1p(CP10k) for counts (row totals ``lib`` (n,),
    default: of ``values``), log1p on the ``log1p`` columns of Gaussian data, else ``values``."""
    if likelihood in ("poisson", "negbinom"):
        lib = np.nansum(values, axis=1) if lib is None else lib
        return np.log1p(values / np.maximum(lib, 1.0)[:, None] * 1e4)
    if likelihood == "gaussian" and log1p.any():
        out = values.copy()
        out[:, log1p] = np.log1p(np.maximum(values[:, log1p], 0.0))
        return out
    return values
