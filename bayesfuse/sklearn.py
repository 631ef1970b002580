"""scikit-learn estimators around :class:`bayesfuse.FusionModel`.

``X`` is one table: a DataFrame whose column blocks are the modalities (``modalities={"mrna": [...],
"protein": [...]}``; a row whose block is entirely NaN lacks that modality, single NaN cells are
missing values), or any 2-D array (``modalities=None``: one modality ``"X"`` with every column, or a
dict of integer column positions). Everything else follows scikit-learn: ``fit`` / ``predict`` /
``predict_proba`` / ``score``, ``classes_``, ``get_params`` / ``set_params``, clone, ``Pipeline``,
``GridSearchCV``.

Pickling goes through the safe save format only: ``__getstate__`` stores the fitted model as JSON
text + safetensors bytes (:func:`bayesfuse.model.persistence.model_to_bytes`), never pickled torch
objects; ``__setstate__`` rebuilds it without executing code.

Predictions are Monte-Carlo posterior-predictive averages over ``num_samples`` draws seeded by
``random_state``, made with common random numbers (``FusionModel.predict(shared_noise=True)``: one
noise vector per draw, shared by every row), so a row's prediction depends only on that row: a
subset or a permutation of the rows gives the same numbers row for row (up to float rounding of
the batched encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _num_samples, check_is_fitted, column_or_1d

__all__ = ["FusionClassifier", "FusionSurvival"]


def _validate(est, X, reset: bool = True) -> np.ndarray:
    """``X`` as a float64 array (NaN allowed) via ``sklearn.utils.validation.validate_data`` (>= 1.6),
    which also sets / checks ``n_features_in_`` and ``feature_names_in_``."""
    kw = {"dtype": np.float64, "ensure_min_samples": 2 if reset else 1}
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:   # pragma: no cover - scikit-learn < 1.6
        return est._validate_data(X, reset=reset, force_all_finite="allow-nan", **kw)
    return validate_data(est, X, reset=reset, ensure_all_finite="allow-nan", **kw)


def _seed(random_state) -> int:
    if random_state is None:
        return 0
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(random_state.randint(2 ** 31 - 1))   # a numpy RandomState


class _FusionBase(BaseEstimator):
    """Shared parameters, data conversion and safe pickling of the bayesfuse estimators."""

    _HEAD = "y"

    def __init__(self, modalities: Mapping[str, Any] | None = None, latent_dim: int | str = "auto", hidden: int = 128,
                 max_epochs: int = 300, batch_size: int = 128, lr: float = 2e-3, validation_fraction: float | str = "auto",
                 patience: int = 30, kl_warmup_epochs: int = 30, modality_dropout: float = 0.25,
                 bayesian: str = "none", likelihoods: Mapping[str, str] | None = None,
                 max_features: int | None = None, num_samples: int = 200, random_state: int | None = 0,
                 device: str = "cpu", progress: bool = False, encoder_dropout: float | str = "auto"):
        self.modalities = modalities
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.encoder_dropout = encoder_dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.kl_warmup_epochs = kl_warmup_epochs
        self.modality_dropout = modality_dropout
        self.bayesian = bayesian
        self.likelihoods = likelihoods
        self.max_features = max_features
        self.num_samples = num_samples
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True   # NaN cells = missing values; an all-NaN block = missing modality
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------ data
    def _blocks(self, X, reset: bool) -> dict[str, np.ndarray]:
        """Validated ``X`` (n, p) cut into modality blocks ``{name: (n, p_m)}`` and their column names."""
        names = list(X.columns.map(str)) if isinstance(X, pd.DataFrame) else None
        arr = _validate(self, X, reset=reset)
        if names is None:
            names = [f"x{j}" for j in range(arr.shape[1])]
        if not np.isfinite(np.nan_to_num(arr, nan=0.0)).all():
            raise ValueError("Input X contains infinity; replace it with NaN (missing) or a finite value.")
        mods = self.modalities
        if mods is None:
            spec = {"X": np.arange(arr.shape[1])}
        else:
            if not isinstance(mods, Mapping) or not mods:
                raise ValueError("modalities must be a dict {modality: list of columns} (or None: one modality).")
            spec = {}
            pos = {c: j for j, c in enumerate(names)}
            for m, cols in mods.items():
                cols = list(cols)
                if all(isinstance(c, (int, np.integer)) for c in cols):
                    idx = np.asarray(cols, dtype=int)
                else:
                    missing = [c for c in cols if str(c) not in pos]
                    if missing:
                        raise ValueError(f"modalities[{m!r}] names columns {missing[:5]} that X does not have; "
                                         "pass X as a DataFrame with these columns (or integer positions).")
                    idx = np.asarray([pos[str(c)] for c in cols], dtype=int)
                if idx.size == 0 or idx.min() < 0 or idx.max() >= arr.shape[1]:
                    raise ValueError(f"modalities[{m!r}] must list at least one existing column of X.")
                spec[str(m)] = idx
        return {m: (arr[:, idx], [names[j] for j in idx]) for m, idx in spec.items()}

    def _data(self, X, targets: pd.DataFrame | None, reset: bool):
        import bayesfuse as bf

        blocks = self._blocks(X, reset)
        n = next(iter(blocks.values()))[0].shape[0]
        ids = pd.Index([str(i) for i in range(n)], name="sample_id")
        # at predict time a modality that no row has is simply absent (at fit time it is an error)
        frames = {m: pd.DataFrame(v, index=ids, columns=cols) for m, (v, cols) in blocks.items()
                  if reset or not np.isnan(v).all()}
        tg = pd.DataFrame(index=ids) if targets is None else targets.set_axis(ids, axis=0)
        return bf.MultiModalData.from_frames(frames, targets=tg, copy=False)

    def _fit_model(self, data, heads):
        import bayesfuse as bf

        seed = self._seed = _seed(self.random_state)
        model = bf.FusionModel(data, heads=heads, latent_dim=self.latent_dim, hidden=self.hidden,
                               likelihoods=self.likelihoods, max_features=self.max_features, device=self.device,
                               bayesian=self.bayesian, encoder_dropout=self.encoder_dropout)
        model.fit(max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                  validation_fraction=self.validation_fraction, patience=self.patience,
                  kl_warmup_epochs=min(self.kl_warmup_epochs, self.max_epochs),
                  modality_dropout=self.modality_dropout if len(data.modality_names) > 1 else 0.0,
                  progress=self.progress)
        model._train_data = None   # do not keep a copy of the training table in the estimator
        self.model_ = model
        return model

    def _posterior(self, X):
        import warnings

        from bayesfuse.exceptions import NoModalityWarning

        check_is_fitted(self, "model_")
        data = self._data(X, None, reset=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoModalityWarning)
            return self.model_.predict(data, num_samples=self.num_samples, seed=getattr(self, "_seed", 0),
                                       return_latent=False, shared_noise=True)

    def latent(self, X) -> np.ndarray:
        """Posterior mean of ``z`` per row, shape (n_samples, latent_dim)."""
        return np.asarray(self._posterior(X).latent_loc)

    # ----------------------------------------------------------- pickle
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        if "model_" in state:
            from bayesfuse.model.persistence import model_to_bytes

            state["model_"] = model_to_bytes(state["model_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "model_" in state:
            import bayesfuse as bf
            from bayesfuse.model.persistence import model_from_bytes

            state["model_"] = model_from_bytes(bf.FusionModel, state["model_"], device=state.get("device", "cpu"))
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:   # pragma: no cover
            self.__dict__.update(state)


class FusionClassifier(ClassifierMixin, _FusionBase):
    """Bayesian multimodal fusion classifier (a :class:`bayesfuse.FusionModel` with one categorical head).

    Parameters
    ----------
    modalities : dict[str, list], optional
        Modality name -> its columns of ``X`` (names for a DataFrame, or integer positions).
        ``None``: all columns form one modality ``"X"``.
    latent_dim, hidden, likelihoods, max_features, bayesian, device, encoder_dropout :
        As in :class:`bayesfuse.FusionModel`.
    max_epochs, batch_size, lr, validation_fraction, patience, kl_warmup_epochs, modality_dropout, progress :
        As in :meth:`bayesfuse.FusionModel.fit` (``modality_dropout`` is 0 with one modality).
    num_samples : int
        Posterior draws averaged by :meth:`predict_proba`.
    random_state : int
        Seeds the fit and the draws (same data + seed = the same model, bit for bit on CPU).

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    model_ : bayesfuse.FusionModel
    n_features_in_, feature_names_in_ : set by ``fit``.
    """

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        _validate(self, X, reset=True)   # X errors first (empty, 1-D, complex, sparse ...)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity; every training row needs a label.")
        if len(y) != _num_samples(X):
            raise ValueError(f"X and y have inconsistent numbers of samples ({_num_samples(X)} and {len(y)}).")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; y has 1 class "
                             f"({self.classes_[0]!r}).")
        import bayesfuse as bf

        data = self._data(X, pd.DataFrame({self._HEAD: codes}), reset=True)
        heads = {self._HEAD: bf.heads.Categorical(classes=list(range(len(self.classes_))))}
        self._fit_model(data, heads)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Posterior-predictive class probabilities, shape (n_samples, n_classes), columns = ``classes_``."""
        post = self._posterior(X)
        p = np.asarray(post.probs(self._HEAD), dtype=np.float64).mean(axis=0)
        return p / p.sum(axis=1, keepdims=True)   # rows sum to 1 in float64 (draws are in the model dtype)

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Most probable class under the posterior predictive, shape (n_samples,)."""
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class FusionSurvival(_FusionBase):
    """Bayesian multimodal fusion survival model (one piecewise-constant-hazard survival head).

    ``y`` is a structured array with an event field (bool) and a time field (as
    ``sksurv.util.Surv.from_arrays``), a DataFrame with ``time`` and ``event`` columns, or an
    array of shape (n, 2) with columns (event, time). :meth:`predict` returns a risk score (higher
    = earlier event: the posterior-mean cumulative hazard at the median training follow-up) and
    :meth:`score` is Harrell's concordance of it (:func:`bayesfuse.metrics.concordance_harrell`).
    Other parameters as :class:`FusionClassifier`.
    """

    _HEAD = "survival"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    @staticmethod
    def _event_time(y) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(y, pd.DataFrame):
            if not {"time", "event"} <= set(y.columns):
                raise ValueError(f"y as a DataFrame needs 'time' and 'event' columns, got {list(y.columns)}.")
            return y["event"].to_numpy(dtype=np.float64), y["time"].to_numpy(dtype=np.float64)
        y = np.asarray(y)
        if y.dtype.names:
            if len(y.dtype.names) != 2:
                raise ValueError("y as a structured array needs exactly two fields: (event, time).")
            f_event, f_time = y.dtype.names
            return y[f_event].astype(np.float64), y[f_time].astype(np.float64)
        if y.ndim == 2 and y.shape[1] == 2:
            return y[:, 0].astype(np.float64), y[:, 1].astype(np.float64)
        raise ValueError("y must be a structured array (event, time) like sksurv.util.Surv.from_arrays, a "
                         "DataFrame with 'time' and 'event' columns, or an (n, 2) array of (event, time).")

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and survival targets ``y`` (see the class docstring)."""
        import bayesfuse as bf

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        _validate(self, X, reset=True)   # X errors first (empty, 1-D, complex, sparse ...)
        event, time = self._event_time(y)
        if len(time) != _num_samples(X):
            raise ValueError(f"X and y have inconsistent numbers of samples ({_num_samples(X)} and {len(time)}).")
        if not (np.isfinite(event).all() and np.isfinite(time).all()):
            raise ValueError("y contains NaN or inf event indicators / times; every row needs both.")
        data = self._data(X, pd.DataFrame({"time": time, "event": event}), reset=True)
        self._fit_model(data, {self._HEAD: bf.heads.Survival(time="time", event="event")})
        self.horizon_ = float(np.median(time[time > 0])) if (time > 0).any() else 1.0
        return self

    def predict_survival_function(self, X, times) -> np.ndarray:
        """Posterior-mean ``S(t | x)``, shape (n_samples, len(times))."""
        post = self._posterior(X)
        return post.survival_function(self._HEAD, np.atleast_1d(np.asarray(times, dtype=np.float64))).mean(axis=0)

    def predict(self, X) -> np.ndarray:
        """Risk score per row, shape (n_samples,): ``-log`` of the posterior-mean ``S(horizon_ | x)``."""
        check_is_fitted(self, "model_")
        s = self.predict_survival_function(X, [self.horizon_])[:, 0]
        return -np.log(np.clip(s, 1e-300, None))

    def score(self, X, y, sample_weight=None) -> float:
        """Harrell's concordance index of :meth:`predict` (higher is better)."""
        from bayesfuse.metrics import concordance_harrell

        if sample_weight is not None:
            raise ValueError("FusionSurvival.score does not support sample_weight.")
        event, time = self._event_time(y)
        return float(concordance_harrell(time, event, self.predict(X)))
