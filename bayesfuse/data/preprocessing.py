"""Per-modality preprocessing fitted on training data and saved with the model.

For each modality a :class:`ModalityTransform` fixes

* the **likelihood** of its decoder: ``gaussian`` (continuous), ``bernoulli`` (binary),
  ``negbinom`` / ``poisson`` (counts); detected from the training values unless overridden;
* the **feature list and order** (columns are matched by name at predict time);
* the **encoder input** transform: counts -> log1p(counts per 10k), skewed non-negative
  continuous columns -> log1p, then centring and scaling with training statistics;
* for count modalities with many features, a **feature selection** (top-variance genes of
  log1p(CP10k) on train, ``max_features``), since decoding 50k genes of 300 patients only
  adds noise and memory.

All statistics come from the training frame; nothing is refitted on test data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayesfuse.data._transform_rules import (
    _COUNT_MIN_FEATURES,
    _COUNT_MIN_LIBRARY,
    _SKEW_LOG1P,
    DEFAULT_MAX_COUNT_FEATURES,
    LIKELIHOODS,
    _encoder_space,
    _finish_center_scale,
)
from bayesfuse.exceptions import DataError

__all__ = ["LIKELIHOODS", "ModalityTransform", "ModalityArrays", "detect_likelihood"]


def detect_likelihood(values: np.ndarray) -> str:
    """Choose a decoder likelihood from training values, shape (n_samples, n_features).

    Rules (documented in docs/architecture.md; override with ``likelihoods={...}``):

    * every observed value in {0, 1}  -> ``"bernoulli"``;
    * non-negative integers, >= 100 features and median row total >= 1000 -> ``"negbinom"``
      (sequencing-like counts; few-feature integer tables such as clinical scores stay Gaussian);
    * otherwise -> ``"gaussian"``.

    The values are scanned in blocks of columns (no full-size temporaries).
    """
    values = np.asarray(values, dtype=np.float64)
    any_obs, all01, nonneg, integer = False, True, True, True
    for j in _column_blocks(values):
        v = values[:, j]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        any_obs = True
        all01 = all01 and bool(((v == 0.0) | (v == 1.0)).all())
        if not all01:
            nonneg = nonneg and bool((v >= 0).all())
            integer = integer and nonneg and bool(np.allclose(v, np.round(v)))
    if not any_obs:
        raise DataError("Cannot detect a likelihood for a modality with no observed values.")
    if all01:
        return "bernoulli"
    if nonneg and integer and values.shape[1] >= _COUNT_MIN_FEATURES:
        if np.median(_row_nansum(values)) >= _COUNT_MIN_LIBRARY:
            return "negbinom"
    return "gaussian"


@dataclass
class ModalityArrays:
    """Numeric arrays of one modality for a set of samples (rows = samples that have it).

    Attributes
    ----------
    encoder_input : ndarray, shape (n, F)
        Transformed, standardised values fed to the encoder (missing cells = 0 = train mean).
    observed : ndarray, shape (n, F)
        Values in the decoder's likelihood space (standardised for Gaussian, 0/1 for
        Bernoulli, raw counts for counts); missing cells hold 0 and are masked.
    cell_mask : ndarray of bool, shape (n, F)
        True where a value was observed.
    library : ndarray, shape (n,)
        Row total of the kept count features (count likelihoods), else ones.
    """

    encoder_input: np.ndarray
    observed: np.ndarray
    cell_mask: np.ndarray
    library: np.ndarray


@dataclass
class ModalityTransform:
    """Preprocessing of one modality, fitted on training data (see module docstring).

    Attributes
    ----------
    name : str
    likelihood : str
        One of :data:`LIKELIHOODS`.
    features : list[str]
        Kept features in model order.
    train_columns : list[str]
        Every column of the training table (columns outside this set are unseen at predict).
    center, scale : ndarray, shape (F,)
        Training mean and standard deviation of the encoder-space values.
    log1p : ndarray of bool, shape (F,)
        Gaussian columns transformed by log1p before scaling.
    library_median : float
        Median training library size (row total of the kept features) of a count modality
        (1.0 otherwise); the library assumed when imputing counts for a patient who lacks
        the modality, whose own library is unknown.
    """

    name: str
    likelihood: str
    features: list[str]
    train_columns: list[str]
    center: np.ndarray
    scale: np.ndarray
    log1p: np.ndarray
    n_train: int = 0
    library_median: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, name: str, df: pd.DataFrame, likelihood: str = "auto",
            max_features: int | None = None) -> ModalityTransform:
        """Fit on the training table ``df`` (rows = samples that have the modality).

        ``df`` may be a :class:`~bayesfuse.data.source.BackedModality` (on-disk table): the same
        statistics are then streamed over chunks of rows (:mod:`bayesfuse.data.streaming_fit`).
        """
        if not isinstance(df, pd.DataFrame) and hasattr(df, "iter_chunks"):
            from bayesfuse.data.streaming_fit import fit_streaming  # noqa: PLC0415

            return fit_streaming(cls, name, df, likelihood, max_features)
        if df.shape[0] < 2:
            raise DataError(f"Modality {name!r} has {df.shape[0]} training sample(s); at least 2 are needed "
                            "to fit its scaling. Drop the modality or add samples.")
        # Statistics are computed over blocks of columns (every statistic here is per column,
        # or a row total accumulated over blocks), so no full-size float64 temporaries.
        values = df.to_numpy(dtype=np.float64)  # a view when df is one float64 block
        lik = detect_likelihood(values) if likelihood == "auto" else likelihood
        if lik not in LIKELIHOODS:
            raise DataError(f"Unknown likelihood {lik!r} for modality {name!r}; use one of {LIKELIHOODS} or 'auto'.")
        _check_values(name, lik, values)
        cols = list(df.columns)
        n_cols = len(cols)
        counts = lik in ("poisson", "negbinom")
        keep = np.ones(n_cols, dtype=bool)
        lib = None
        if counts:
            keep &= _column_reduce(values, lambda v: np.nansum(v, axis=0)) > 0  # genes never observed: no information
            lib = _row_nansum(values)
            if max_features is None:
                max_features = DEFAULT_MAX_COUNT_FEATURES
        log1p = np.zeros(n_cols, dtype=bool)
        if lik == "gaussian":
            def _log1p_rule(v: np.ndarray) -> np.ndarray:
                with np.errstate(all="ignore"):
                    skew = np.asarray(stats.skew(v, axis=0, nan_policy="omit"), dtype=float)
                    nonneg = np.nanmin(v, axis=0) >= 0
                many = np.array([np.unique(c[np.isfinite(c)]).size > 2 for c in v.T], dtype=bool)
                return nonneg & many & (np.nan_to_num(skew) > _SKEW_LOG1P)

            with warnings.catch_warnings():
                # all-NaN / constant columns: numpy's 'All-NaN slice' and scipy's small-sample and
                # precision-loss warnings say nothing useful here (all-NaN columns are named below)
                warnings.simplefilter("ignore", RuntimeWarning)
                log1p = _column_reduce(values, _log1p_rule).astype(bool)
        if max_features is not None and keep.sum() > max_features:
            var = _column_reduce(values, lambda v: np.nanvar(v, axis=0), lik, log1p, lib)
            var[~keep] = -np.inf
            top = np.sort(np.argsort(-var, kind="stable")[:max_features])
            keep = np.zeros(n_cols, dtype=bool)
            keep[top] = True
            if counts:  # encoder space depends on the kept library
                lib = _row_nansum(values, np.flatnonzero(keep))
        kept = np.flatnonzero(keep)
        library_median = 1.0
        if counts:
            library_median = float(max(np.median(_row_nansum(values, kept)), 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: handled below
            center = _column_reduce(values, lambda v: np.nanmean(v, axis=0), lik, log1p, lib, kept)
            scale = _column_reduce(values, lambda v: np.nanstd(v, axis=0), lik, log1p, lib, kept)
        center, scale = _finish_center_scale(name, cols, kept, center, scale, stacklevel=4)
        return cls(name=name, likelihood=lik, features=[cols[k] for k in kept],
                   train_columns=cols, center=center, scale=scale, log1p=log1p[keep], n_train=int(df.shape[0]),
                   library_median=library_median)

    # --------------------------------------------------------------- applying
    @property
    def n_features(self) -> int:
        return len(self.features)

    def align(self, df: pd.DataFrame) -> pd.DataFrame:
        """Match columns by name: reorder to the model's features, refusing unseen or missing ones."""
        cols = pd.Index(df.columns.map(str))
        unseen = cols.difference(pd.Index(self.train_columns))
        if len(unseen):
            raise DataError(
                f"Modality {self.name!r} has {len(unseen)} column(s) the model never saw at fit time "
                f"(e.g. {unseen[:5].tolist()}). Drop them (data.drop_features({{{self.name!r}: [...]}})) "
                "or refit the model with them.")
        missing = pd.Index(self.features).difference(cols)
        if len(missing):
            raise DataError(
                f"Modality {self.name!r} lacks {len(missing)} feature column(s) the model needs "
                f"(e.g. {missing[:5].tolist()}). Provide them (NaN cells are allowed for missing values) "
                f"or drop the whole modality with drop_modalities([{self.name!r}]).")
        out = df.copy()
        out.columns = cols
        return out[self.features]

    def transform(self, df: pd.DataFrame) -> ModalityArrays:
        """Arrays for the samples of ``df`` (rows kept in order)."""
        values = self.align(df).to_numpy(dtype=np.float64)
        _check_values(self.name, self.likelihood, values)
        mask = np.isfinite(values)
        enc = (_encoder_space(values, self.likelihood, self.log1p) - self.center) / self.scale
        enc = np.where(np.isfinite(enc), enc, 0.0)
        if self.likelihood == "gaussian":
            observed = enc.copy()
        else:
            observed = np.where(mask, values, 0.0)
        if self.likelihood in ("poisson", "negbinom"):
            library = np.nansum(values, axis=1)
            library = np.maximum(library, 1.0)
        else:
            library = np.ones(values.shape[0])
        return ModalityArrays(enc, observed * mask, mask, library)

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """Map decoder-space values (..., F) back to the data's original units.

        Gaussian: undo the standardisation, then ``expm1`` on log1p columns, clipped at 0
        (those columns were non-negative in training and log1p was applied to ``max(x, 0)``).
        Bernoulli values (0/1 or probabilities) and counts are already in original units
        and come back unchanged (counts stay counts).
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1:] != (self.n_features,):
            raise DataError(f"to_original of modality {self.name!r} expects a last axis of {self.n_features} "
                            f"features (model order), got shape {values.shape}.")
        if self.likelihood != "gaussian":
            return values
        out = values * self.scale + self.center
        if self.log1p.any():
            out = np.where(self.log1p, np.maximum(np.expm1(out), 0.0), out)
        return out

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {"name": self.name, "likelihood": self.likelihood, "features": list(self.features),
                "train_columns": list(self.train_columns), "n_train": self.n_train,
                "library_median": self.library_median}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"center": self.center, "scale": self.scale, "log1p": self.log1p.astype(np.int8)}

    @classmethod
    def from_saved(cls, cfg: dict[str, Any], arrays: dict[str, np.ndarray]) -> ModalityTransform:
        return cls(name=cfg["name"], likelihood=cfg["likelihood"], features=list(cfg["features"]),
                   train_columns=list(cfg["train_columns"]), center=np.asarray(arrays["center"], dtype=np.float64),
                   scale=np.asarray(arrays["scale"], dtype=np.float64),
                   log1p=np.asarray(arrays["log1p"]).astype(bool), n_train=int(cfg.get("n_train", 0)),
                   library_median=float(cfg.get("library_median", 1.0)))


_BLOCK_CELLS = 1 << 22  # cells per block of columns in fit statistics (32 MiB of float64)


def _column_blocks(values: np.ndarray, columns: np.ndarray | None = None):
    """Yield column selections (slices, or index arrays when ``columns`` is given) of ~_BLOCK_CELLS cells."""
    n_rows, n_cols = values.shape[0], (values.shape[1] if columns is None else len(columns))
    step = max(1, _BLOCK_CELLS // max(n_rows, 1))
    for start in range(0, n_cols, step):
        yield slice(start, start + step) if columns is None else columns[start:start + step]


def _column_reduce(values: np.ndarray, fn, likelihood: str | None = None, log1p: np.ndarray | None = None,
                   lib: np.ndarray | None = None, columns: np.ndarray | None = None) -> np.ndarray:
    """Per-column statistic ``fn(block) -> (k,)`` over blocks of columns, concatenated (F,).

    With ``likelihood`` given, ``fn`` sees the encoder-space values of the block (see
    :func:`_encoder_space`; counts use the row totals ``lib`` (n,)).
    """
    out = []
    for j in _column_blocks(values, columns):
        v = values[:, j]
        if likelihood is not None:
            v = _encoder_space(v, likelihood, log1p[j], lib)
        out.append(np.asarray(fn(v), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def _row_nansum(values: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Row totals ignoring NaN over all (or the given) columns, shape (n,), accumulated over blocks."""
    total = np.zeros(values.shape[0])
    for j in _column_blocks(values, columns):
        total += np.nansum(values[:, j], axis=1)
    return total


def _check_values(name: str, likelihood: str, values: np.ndarray) -> None:
    if likelihood in ("bernoulli", "poisson", "negbinom"):
        for j in _column_blocks(values):
            _check_block(name, likelihood, values[:, j])


def _check_block(name: str, likelihood: str, values: np.ndarray) -> None:
    v = values[np.isfinite(values)]
    if likelihood == "bernoulli" and not np.isin(v, (0.0, 1.0)).all():
        raise DataError(f"Modality {name!r} uses a Bernoulli likelihood but has values other than 0/1; "
                        "binarise it or set likelihoods={name!r: 'gaussian'}.")
    if likelihood in ("poisson", "negbinom") and (v < 0).any():
        raise DataError(f"Modality {name!r} uses a count likelihood but has negative values; "
                        "pass raw counts or set likelihoods={name!r: 'gaussian'}.")
