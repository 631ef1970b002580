"""User-facing head specifications.

A head is a supervised likelihood on the shared latent ``z``, keyed by a target column.
These classes are plain configuration (no torch): :mod:`bayesfuse.module.heads` builds the
torch modules from them, and :class:`bayesfuse.Posterior` uses them to name outputs.

>>> bf.FusionModel(data, heads={"subtype": "categorical",
...                             "survival": bf.heads.Survival(time="time", event="event")})
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from bayesfuse.exceptions import ArgumentError, InputTypeError

__all__ = ["Head", "Categorical", "Survival", "make_head", "head_from_config"]


class Head(ABC):
    """Abstract base of head specifications.

    Attributes
    ----------
    kind : str
        Registry name (``"categorical"``, ``"survival"``).
    column : str or None
        Target column the head reads; ``None`` means "the key under which it was given".
    """

    kind: ClassVar[str]
    column: str | None

    @abstractmethod
    def target_columns(self) -> list[str]:
        """Target columns this head reads from ``MultiModalData.targets``."""

    def to_config(self) -> dict[str, Any]:
        cfg = asdict(self)  # type: ignore[call-overload]
        cfg["kind"] = self.kind
        return cfg


@dataclass
class Categorical(Head):
    """Categorical head: ``y | z ~ Categorical(softmax(f(z)))``.

    Parameters
    ----------
    column : str, optional
        Target column with class labels (unknown label = NaN / empty cell). Defaults to the
        key the head is registered under (e.g. ``"subtype"`` or ``"origin"``).
    hidden : int
        Width of the hidden layer of ``f``; ``0`` (default) makes ``f`` linear in ``z``.
    weight : float or "auto"
        Multiplier of this head's log-likelihood in the ELBO (1.0 = the plain generative
        model). One label carries ~1 nat against hundreds of nats of reconstruction, so
        the latent ignores it unless it is up-weighted, as the alpha of semi-supervised
        VAEs (Kingma et al. 2014). ``"auto"`` (default) = total number of model features / 10,
        clipped to [1, 100] (measured on tcga_gbmlgg: weight 1 -> test NLL 0.46, 20 -> 0.20,
        50 -> 0.14; see docs/model.md).
    classes : list, optional
        Class labels in column order. Learned from the training data when omitted; set it to
        fix the order or to include classes absent from the training data.
    """

    column: str | None = None
    hidden: int = 0
    weight: float | str = "auto"
    classes: list | None = None
    kind: ClassVar[str] = "categorical"

    def target_columns(self) -> list[str]:
        return [self.column] if self.column else []


@dataclass
class Survival(Head):
    """Right-censored survival head (piecewise-constant hazard on a data-driven time grid).

    Parameters
    ----------
    time, event : str
        Target columns with follow-up time (> 0) and event indicator (1 = event, 0 = censored).
    n_intervals : int
        Number of pieces of the hazard; the cut points are quantiles of the training event times.
    hidden : int
        Width of the hidden layer of the log-hazard network (0 = linear in ``z``, default). 32 gave
        +0.002 to +0.004 validation C on four cohorts but failed D-calibration on tcga_gbmlgg;
        :func:`bayesfuse.evaluation.select_survival_head` chooses it per dataset on training data
        (docs/survival.md).
    smoothness : float or "auto"
        Prior sd of the random-walk step of the baseline log-hazard and of the weights between
        neighbouring pieces (how far the hazard may change shape over time: 0 = proportional
        hazards). ``"auto"`` (default) sets it from the training events per piece,
        :func:`bayesfuse.model.survival_targets.auto_smoothness`: 0.1 for up to 16 events per
        piece, rising as their square root to 0.5 at 400 (chosen on the cohort zoo, docs/model.md).
    weight : float or "auto"
        Multiplier of this head's log-likelihood in the ELBO (see :class:`Categorical`).
    nonpositive_times : {"error", "shift", "drop"}
        What to do with times <= 0 at input. ``"error"`` (default) refuses them; ``"shift"``
        replaces them by half the smallest positive time; ``"drop"`` treats their survival
        label as unknown (the patient still trains the rest of the model).
    cuts : list of float, optional
        Inner cut points of the time grid; learned from the training event times when omitted.
    baseline : list of float, optional
        Fitted crude log event rate per piece (set at model construction; centres the prior).
    covariates : list of str, optional
        Modalities whose (standardised) encoder inputs ``x_c`` also enter the log-hazard
        directly, as a proportional term: ``log h_k = b_k + g(z)^T w_k + x_c^T v`` with
        ``v ~ N(0, a_v^2 I)``, ``a_v = min(1, 2 / sqrt(C))`` (Bayesian, mean-field guide). Absent
        modalities (also those hidden by modality dropout in training) and missing cells are
        filled with the decoder mean ``E[x_c | z]`` of the sampled ``z``. Gaussian modalities
        only. ``None`` (default): the latent-only head. See docs/survival.md ("direct
        covariate path").
    covariate_effect : {"proportional", "piecewise"}
        ``"proportional"`` (default): one ``v`` for every piece (a Cox-type term);
        ``"piecewise"``: per-piece ``v_k`` with the random-walk prior of ``w`` (non-PH effects).
    covariate_dims : list of int, optional
        Feature count of each covariate modality (set at model construction).
    """

    time: str = "time"
    event: str = "event"
    n_intervals: int = 12
    hidden: int = 0
    smoothness: float | str = "auto"
    weight: float | str = "auto"
    nonpositive_times: str = "error"
    column: str | None = None
    cuts: list | None = field(default=None, repr=False)
    baseline: list | None = field(default=None, repr=False)
    shift_time: float | None = field(default=None, repr=False)
    covariates: list | None = None
    covariate_effect: str = "proportional"
    covariate_dims: list | None = field(default=None, repr=False)
    kind: ClassVar[str] = "survival"

    def __post_init__(self) -> None:
        if self.nonpositive_times not in ("error", "shift", "drop"):
            raise ArgumentError(
                f"nonpositive_times={self.nonpositive_times!r}; use 'error', 'shift' or 'drop'."
            )
        if isinstance(self.covariates, str):
            self.covariates = [self.covariates]
        if self.covariates is not None:
            cov = list(self.covariates)
            if not all(isinstance(m, str) for m in cov) or len(set(cov)) != len(cov):
                raise ArgumentError(f"covariates={self.covariates!r} must be a list of distinct modality names, "
                                 "e.g. covariates=['clinical'].")
            self.covariates = cov or None
        if self.covariate_effect not in ("proportional", "piecewise"):
            raise ArgumentError(f"covariate_effect={self.covariate_effect!r}; use 'proportional' or 'piecewise'.")

    def target_columns(self) -> list[str]:
        return [self.time, self.event]


_REGISTRY: dict[str, type[Head]] = {"categorical": Categorical, "survival": Survival}


def make_head(key: str, spec: str | Head) -> Head:
    """Normalise a user head argument (a string or a :class:`Head`) keyed by ``key``."""
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            raise ArgumentError(
                f"Unknown head type {spec!r} for {key!r}; use one of {sorted(_REGISTRY)} "
                f"or a head object such as bf.heads.Categorical()."
            )
        spec = _REGISTRY[spec]()
    if not isinstance(spec, Head):
        raise InputTypeError(
            f"heads[{key!r}] must be a string or a bf.heads.Head object, got {type(spec).__name__}."
        )
    # Fitting writes into the spec (classes, cuts, weight): work on a copy so a spec object reused
    # across models or cohorts never carries one model's fitted state into another.
    spec = copy.deepcopy(spec)
    if isinstance(spec, Categorical) and spec.column is None:
        spec.column = key
    return spec


def resolve_weight(spec: Head, n_features: int) -> float:
    """Numeric ELBO weight of a head: ``"auto"`` = clip(n_features / 10, 1, 100) (survival: lower bound 10)."""
    w = getattr(spec, "weight", 1.0)
    if w == "auto":
        # survival: at least 10 (one censored time carries ~1 nat; measured on METABRIC/WHAS,
        # weight 1 -> C 0.607/0.821, 10 -> 0.646/0.837; see docs/survival.md)
        low = 10.0 if getattr(spec, "kind", None) == "survival" else 1.0
        return float(min(100.0, max(low, n_features / 10.0)))
    w = float(w)
    if not w > 0:
        raise ArgumentError(f"Head weight must be > 0 or 'auto', got {w}.")
    return w


def head_from_config(cfg: dict[str, Any]) -> Head:
    """Rebuild a head specification from its ``to_config()`` dict (the inverse used when loading a saved model).

    Parameters
    ----------
    cfg : dict
        ``{"kind": "categorical" | "survival", **options}``.

    Returns
    -------
    Head
    """
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    return _REGISTRY[kind](**cfg)
