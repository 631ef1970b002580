"""Temperature scaling of the per-draw class probabilities of a Posterior."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from bayesfuse.calibration._common import CalibrationWarning, align_labels, check_posterior
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.posterior import Posterior

__all__ = ["TemperatureScaler"]

_TINY = 1e-300


def _tempered_log_predictive(logp: np.ndarray, temperature: float) -> np.ndarray:
    """log E_s[softmax(log p_s / T)], shape (n, C), from per-draw log probs (S, n, C)."""
    lq = log_softmax(logp / temperature, axis=-1)
    return logsumexp(lq, axis=0) - np.log(lq.shape[0])


class TemperatureScaler:
    """One temperature ``T`` for all draws: ``p_s -> softmax(log p_s / T)``.

    ``T`` minimises the negative log-likelihood of the posterior-predictive probabilities
    ``E_s[softmax(log p_s / T)]`` on a tuning set (bounded scalar optimisation of
    ``log T``). ``T > 1`` softens over-confident draws, ``T < 1`` sharpens.

    Parameters
    ----------
    bounds : tuple of float
        Search interval of ``T``.

    Attributes
    ----------
    temperature_ : float
    nll_before_, nll_after_ : float
        Mean NLL on the tuning set at ``T = 1`` and at ``temperature_``.
    head_ : str
    """

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        lo, hi = bounds
        if not 0 < lo < 1 < hi:
            raise ValueError(f"bounds={bounds!r} must satisfy 0 < low < 1 < high, e.g. (0.05, 20).")
        self.bounds = (float(lo), float(hi))

    @staticmethod
    def _logp(post: Posterior, head: str) -> np.ndarray:
        return np.log(np.clip(np.asarray(post.probs(head), dtype=float), _TINY, None))

    @staticmethod
    def nll(post: Posterior, labels: pd.Series, head: str, temperature: float = 1.0) -> float:
        """Mean negative log posterior-predictive probability of the true class at ``temperature``."""
        codes = align_labels(post, labels, head)
        lp = _tempered_log_predictive(TemperatureScaler._logp(post, head), temperature)
        return float(-lp[np.arange(len(codes)), codes].mean())

    def fit(self, post: Posterior | Sequence[Posterior], labels: pd.Series, head: str) -> TemperatureScaler:
        """Fit ``T`` on tuning patients (not the calibration patients of a later Abstainer).

        Parameters
        ----------
        post : Posterior or sequence of Posterior
            Tuning patients' posterior, draws ``(S, n, C)``. A sequence pools several posteriors
            into one tuning set (mean NLL over all their rows), e.g. the same tuning patients
            predicted with all modalities and with each modality hidden in turn, so that ``T``
            fits the missingness patterns it will be applied to (docs/imputation.md). Their
            classes must agree; draw counts may differ.
        labels : pandas.Series
            True class per patient id (aligned by id).
        head : str

        Returns
        -------
        TemperatureScaler
            ``self``, fitted.
        """
        posts = [post] if isinstance(post, Posterior) else list(post)
        if not posts:
            raise DataError("fit() got an empty sequence of posteriors: pass at least one tuning Posterior.")
        classes = list(posts[0].classes(head))
        parts = []
        for q in posts:
            if list(q.classes(head)) != classes:
                raise DataError(f"The posteriors passed to fit() disagree on the classes of head {head!r}: "
                                f"{classes} vs {list(q.classes(head))}; predict them with the same model.")
            codes = align_labels(q, labels, head)
            parts.append((self._logp(q, head), np.arange(len(codes)), codes))
        n_rows = sum(len(c) for _, _, c in parts)

        def objective(log_t: float) -> float:
            t = np.exp(log_t)
            return float(-sum(_tempered_log_predictive(lp, t)[r, c].sum() for lp, r, c in parts) / n_rows)

        res = minimize_scalar(objective, bounds=tuple(np.log(self.bounds)), method="bounded",
                              options={"xatol": 1e-5})
        self.head_ = head
        self.temperature_ = float(np.exp(res.x))
        self.nll_before_ = objective(0.0)
        self.nll_after_ = float(res.fun)
        if self.nll_after_ > self.nll_before_:  # bounded search missed T=1
            self.temperature_, self.nll_after_ = 1.0, self.nll_before_
        lo, hi = self.bounds
        if self.temperature_ < lo * 1.01 or self.temperature_ > hi / 1.01:
            n_err = sum(int((lp.sum(axis=0).argmax(-1) != c).sum()) for lp, _, c in parts)
            warnings.warn(
                f"The temperature ran to its bound ({self.temperature_:.3g}; bounds {self.bounds}): the tuning set "
                f"({n_rows} rows, {n_err} misclassified by the draw-averaged log-probabilities) cannot identify "
                "a temperature, and the scaled probabilities would be near 0/1. Use a tuning set with more "
                "patients (and some errors), or leave the model uncalibrated.", CalibrationWarning, stacklevel=2)
        return self

    def transform(self, post: Posterior) -> Posterior:
        """A NEW Posterior whose ``head_`` draws are ``softmax(log p_s / temperature_)``.

        The input is not modified; other heads and arrays are shared (not copied).
        """
        if not hasattr(self, "temperature_"):
            raise NotFittedError("This TemperatureScaler is not fitted yet: call .fit(tune_post, labels, head=...).")
        check_posterior(post, self.head_)
        if "probs" not in post.draws[self.head_]:
            raise DataError(f"post.draws[{self.head_!r}] has no 'probs'.")
        q = np.exp(log_softmax(self._logp(post, self.head_) / self.temperature_, axis=-1))
        draws = dict(post.draws)
        draws[self.head_] = {**post.draws[self.head_], "probs": q}
        extra = {**post.extra, "temperature": {**post.extra.get("temperature", {}), self.head_: self.temperature_}}
        return dataclasses.replace(post, draws=draws, extra=extra)

    def fit_transform(self, post: Posterior, labels: pd.Series, head: str) -> Posterior:
        return self.fit(post, labels, head).transform(post)
