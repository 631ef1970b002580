"""`ModalityTransform.fit` for a backed (on-disk) modality: statistics streamed over row chunks.

The in-memory fit (:meth:`bayesfuse.data.preprocessing.ModalityTransform.fit`) reduces blocks of
columns of the whole table. A :class:`~bayesfuse.data.source.BackedModality` is read in chunks of
rows instead, and every statistic is merged over chunks:

1. pass 1: likelihood detection (0/1, non-negative, integer, median row total), value checks,
   column totals (count features never observed are dropped), and for Gaussian data the per-column
   minimum, >2 distinct values and skewness (central moments merged by Chan's formulas) that decide
   the log1p columns;
2. pass 2 (only when ``max_features`` selects): per-column variance of the encoder-space values;
3. pass 3: centre and scale of the kept features (mean and sd merged over chunks) and the library
   median of count data.

A count row's library (row total) is a function of that row only, so each chunk computes its own.
The results equal the in-memory fit up to floating-point summation order (tested to 1e-10).
"""

from __future__ import annotations

import warnings

import numpy as np

from bayesfuse.data import _transform_rules as rules
from bayesfuse.data.source import BackedModality
from bayesfuse.exceptions import DataError

__all__ = ["fit_streaming"]


class _Moments:
    """Per-column count, mean and central moment sums M2 (and M3) over NaN-masked chunks, merged exactly."""

    def __init__(self, n_cols: int, third: bool = False):
        self.n = np.zeros(n_cols)
        self.mean = np.zeros(n_cols)
        self.m2 = np.zeros(n_cols)
        self.m3 = np.zeros(n_cols) if third else None

    def update(self, v: np.ndarray) -> None:
        fin = np.isfinite(v)
        nb = fin.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = np.where(nb > 0, np.where(fin, v, 0.0).sum(axis=0) / np.maximum(nb, 1), 0.0)
        d = np.where(fin, v - mb, 0.0)
        m2b = (d * d).sum(axis=0)
        m3b = (d * d * d).sum(axis=0) if self.m3 is not None else None
        na, n = self.n, self.n + nb
        delta = mb - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            safe = np.maximum(n, 1)
            if self.m3 is not None:
                self.m3 = (self.m3 + m3b + delta ** 3 * na * nb * (na - nb) / safe ** 2
                           + 3 * delta * (na * m2b - nb * self.m2) / safe)
            self.m2 = self.m2 + m2b + delta ** 2 * na * nb / safe
            self.mean = np.where(n > 0, self.mean + delta * nb / safe, 0.0)
        self.n = n

    def var(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.m2 / self.n, np.nan)

    def nanmean(self) -> np.ndarray:
        return np.where(self.n > 0, self.mean, np.nan)

    def skew(self) -> np.ndarray:
        """Biased sample skewness (``scipy.stats.skew(nan_policy="omit")``); NaN for constant columns."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m2 = self.m2 / self.n
            m3 = self.m3 / self.n
            tiny = m2 <= (np.finfo(np.float64).eps * self.mean) ** 2
            return np.where((self.n > 0) & ~tiny & (m2 > 0), m3 / m2 ** 1.5, np.nan)


def fit_streaming(cls, name: str, src: BackedModality, likelihood: str = "auto", max_features: int | None = None):
    """Fit a :class:`~bayesfuse.data.preprocessing.ModalityTransform` on a backed modality (see module docstring)."""
    n, n_cols = src.shape
    if n < 2:
        raise DataError(f"Modality {name!r} has {n} training sample(s); at least 2 are needed to fit its scaling. "
                        "Drop the modality or add samples.")
    if likelihood != "auto" and likelihood not in rules.LIKELIHOODS:
        raise DataError(f"Unknown likelihood {likelihood!r} for modality {name!r}; use one of "
                        f"{rules.LIKELIHOODS} or 'auto'.")
    cols = list(src.columns)
    # ---------------------------------------------------------------- pass 1
    any_obs, all01, nonneg, integer = False, True, True, True
    row_total = np.zeros(n)
    col_total = np.zeros(n_cols)
    col_min = np.full(n_cols, np.inf)
    u1 = np.full(n_cols, np.nan)
    u2 = np.full(n_cols, np.nan)
    many = np.zeros(n_cols, dtype=bool)
    mom = _Moments(n_cols, third=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for rows, v in src.iter_chunks():
            fin = np.isfinite(v)
            obs = v[fin]
            if obs.size:
                any_obs = True
                all01 = all01 and bool(((obs == 0.0) | (obs == 1.0)).all())
                nonneg = nonneg and bool((obs >= 0).all())
                integer = integer and bool(np.allclose(obs, np.round(obs)))
            row_total[rows] = np.nansum(v, axis=1)
            col_total += np.nansum(v, axis=0)
            col_min = np.fmin(col_min, np.nanmin(np.where(fin, v, np.inf), axis=0))
            u1 = np.where(np.isnan(u1), np.nanmin(v, axis=0), u1)
            diff = fin & (v != u1)
            u2 = np.where(np.isnan(u2), np.nanmin(np.where(diff, v, np.nan), axis=0), u2)
            many |= (diff & (v != u2)).any(axis=0)
            mom.update(v)
    if not any_obs:
        raise DataError("Cannot detect a likelihood for a modality with no observed values.")
    if likelihood == "auto":
        if all01:
            lik = "bernoulli"
        elif (nonneg and integer and n_cols >= rules._COUNT_MIN_FEATURES
              and np.median(row_total) >= rules._COUNT_MIN_LIBRARY):
            lik = "negbinom"
        else:
            lik = "gaussian"
    else:
        lik = likelihood
    if lik == "bernoulli" and not all01:
        raise DataError(f"Modality {name!r} uses a Bernoulli likelihood but has values other than 0/1; "
                        "binarise it or set likelihoods={name!r: 'gaussian'}.")
    if lik in ("poisson", "negbinom") and not nonneg:
        raise DataError(f"Modality {name!r} uses a count likelihood but has negative values; "
                        "pass raw counts or set likelihoods={name!r: 'gaussian'}.")
    counts = lik in ("poisson", "negbinom")
    keep = np.ones(n_cols, dtype=bool)
    if counts:
        keep &= col_total > 0
        if max_features is None:
            max_features = rules.DEFAULT_MAX_COUNT_FEATURES
    log1p = np.zeros(n_cols, dtype=bool)
    if lik == "gaussian":
        log1p = (col_min >= 0) & many & (np.nan_to_num(mom.skew()) > rules._SKEW_LOG1P)
    # ---------------------------------------------------------------- pass 2
    if max_features is not None and keep.sum() > max_features:
        var_m = _Moments(n_cols)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _, v in src.iter_chunks():
                var_m.update(rules._encoder_space(v, lik, log1p))
        var = var_m.var()
        var[~keep] = -np.inf
        top = np.sort(np.argsort(-var, kind="stable")[:max_features])
        keep = np.zeros(n_cols, dtype=bool)
        keep[top] = True
    kept = np.flatnonzero(keep)
    # ---------------------------------------------------------------- pass 3
    stats = _Moments(len(kept))
    lib_kept = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for rows, v in src.iter_chunks():
            vk = v[:, kept]
            lib = np.nansum(vk, axis=1) if counts else None
            if counts:
                lib_kept[rows] = lib
            stats.update(rules._encoder_space(vk, lik, log1p[kept], lib))
    library_median = float(max(np.median(lib_kept), 1.0)) if counts else 1.0
    center = stats.nanmean()
    scale = np.sqrt(stats.var())
    center, scale = rules._finish_center_scale(name, cols, kept, center, scale, stacklevel=5)
    return cls(name=name, likelihood=lik, features=[cols[k] for k in kept], train_columns=cols, center=center,
               scale=scale, log1p=log1p[keep], n_train=int(n), library_median=library_median)
