"""Post-hoc calibration map of categorical heads: a temperature per missingness pattern (numpy only).

Every posterior draw of a categorical head is tempered, ``p_s -> softmax(log p_s / T)``, with
``T`` chosen for the patient's missingness pattern (the set of modalities it has). ``T > 1``
softens an over-confident head, ``T < 1`` sharpens an under-confident one. This module holds
the record (:class:`ClassCalibration`), its fit from arrays and its application; the code that
predicts the held-out patients it is fitted on lives in :mod:`bayesfuse.model.head_calibration`.

Fit (empirical Bayes, two stages; the data are patients the SVI fit did not train on):

1. **pooled** ``log T0``: the MAP under ``log T0 ~ N(0, prior_sd^2)`` of the posterior-predictive
   log-likelihood ``sum_i w_i log E_s[softmax(log p_is / T0)]_{y_i}`` over every (patient,
   pattern) row, where a patient predicted under ``k`` patterns counts ``w_i = 1/k`` per row, so
   the data weigh as many patients as there are;
2. **per pattern** ``log T_p``: the MAP under ``log T_p ~ N(log T0, pattern_sd^2)`` on that
   pattern's rows (weight 1). A pattern with few patients stays near the pooled value; a
   pattern never seen in calibration uses ``T0``.

The prior keeps ``T`` finite when the calibration patients are all classified correctly (the
likelihood alone would then drive ``T`` to 0, i.e. probabilities of exactly 0/1) and leaves an
already calibrated head near ``T = 1`` when the data are few. Checked against a grid search of
the same objective (tests/test_class_calibration.py).

Shapes: ``logp`` (S, n, C) per-draw log-probabilities, ``codes`` (n,) integer labels in ``0..C-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

__all__ = ["ClassCalibration", "tempered_log_predictive", "map_log_temperature", "pattern_key",
           "PRIOR_SD", "PATTERN_SD", "LOG_T_BOUNDS"]

#: prior sd of the pooled log-temperature (T within [0.37, 2.7] at one sd)
PRIOR_SD = 1.0
#: prior sd of a pattern's log-temperature around the pooled one (T_p within ~x1.3 of T0 at one sd)
PATTERN_SD = 0.25
#: search interval of log T (T in [0.02, 50])
LOG_T_BOUNDS = (float(np.log(0.02)), float(np.log(50.0)))
_TINY = 1e-300


def pattern_key(present: Sequence[str]) -> str:
    """Name of a missingness pattern: the present modalities joined by ``+`` (``""`` = none)."""
    return "+".join(present)


def tempered_log_predictive(logp: np.ndarray, temperature) -> np.ndarray:
    """``log E_s[softmax(log p_s / T)]``, shape (n, C), from per-draw log probabilities (S, n, C).

    ``temperature`` is a scalar or one value per patient, shape (n,).
    """
    t = np.asarray(temperature, dtype=float)
    t = t[None, :, None] if t.ndim == 1 else t
    lq = log_softmax(logp / t, axis=-1)
    return logsumexp(lq, axis=0) - np.log(lq.shape[0])


def map_log_temperature(logp: np.ndarray, codes: np.ndarray, weights: np.ndarray | None = None,
                        prior_loc: float = 0.0, prior_sd: float = PRIOR_SD) -> float:
    """MAP of ``log T`` given labelled rows and the prior ``N(prior_loc, prior_sd^2)``.

    Parameters
    ----------
    logp : numpy.ndarray, shape (S, n, C)
    codes : numpy.ndarray of int, shape (n,)
    weights : numpy.ndarray, shape (n,), optional
        Per-row likelihood weights (default 1).
    prior_loc, prior_sd : float
        ``prior_sd=inf`` gives the maximum-likelihood temperature (bounded search).

    Returns
    -------
    float
        ``log T`` in :data:`LOG_T_BOUNDS`.
    """
    codes = np.asarray(codes, dtype=int)
    w = np.ones(len(codes)) if weights is None else np.asarray(weights, dtype=float)
    rows = np.arange(len(codes))

    def objective(log_t: float) -> float:
        nll = -(w * tempered_log_predictive(logp, np.exp(log_t))[rows, codes]).sum()
        return float(nll + 0.5 * ((log_t - prior_loc) / prior_sd) ** 2) if np.isfinite(prior_sd) else float(nll)

    res = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    best = float(res.x)
    # the bounded search can miss the prior's centre on a flat objective: keep the better one
    loc = float(np.clip(prior_loc, *LOG_T_BOUNDS))
    return loc if objective(loc) <= objective(best) else best


@dataclass
class ClassCalibration:
    """Temperatures of one categorical head, per missingness pattern (see the module docstring).

    Attributes
    ----------
    head : str
    modalities : list of str
        The model's modalities, in the order pattern keys list them.
    pooled : float
        ``T0``, used for patterns without their own temperature.
    temperatures : dict[str, float]
        ``T_p`` by pattern key (:func:`pattern_key`).
    n_patients : dict[str, int]
        Calibration rows behind each ``T_p``.
    n_calibration : int
        Distinct calibration patients.
    nll_before, nll_after : float
        Mean (patient-weighted) posterior-predictive NLL of the calibration rows at ``T = 1`` and
        under the fitted map.
    """

    head: str
    modalities: list[str]
    pooled: float
    temperatures: dict[str, float] = field(default_factory=dict)
    n_patients: dict[str, int] = field(default_factory=dict)
    n_calibration: int = 0
    nll_before: float = float("nan")
    nll_after: float = float("nan")

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, head: str, modalities: Sequence[str], groups: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
            prior_sd: float = PRIOR_SD, pattern_sd: float = PATTERN_SD) -> ClassCalibration:
        """Fit from labelled calibration rows grouped by pattern.

        Parameters
        ----------
        head : str
        modalities : sequence of str
        groups : sequence of (pattern_key, logp (S, n_g, C), codes (n_g,), patient_ids (n_g,))
            Rows of the same patient under several patterns share its id.
        prior_sd, pattern_sd : float
            Prior sds of the pooled and the per-pattern log-temperatures.
        """
        groups = [(k, np.asarray(lp, dtype=float), np.asarray(c, dtype=int), np.asarray(i, dtype=object))
                  for k, lp, c, i in groups if len(c)]
        if not groups:
            raise ValueError(f"No labelled calibration rows for head {head!r}.")
        ids = np.concatenate([i for _, _, _, i in groups])
        uniq, inv, counts = np.unique(ids.astype(str), return_inverse=True, return_counts=True)
        w_all = 1.0 / counts[inv]
        n_classes = {lp.shape[-1] for _, lp, _, _ in groups}
        if len(n_classes) != 1:
            raise ValueError(f"Calibration rows of head {head!r} disagree on the number of classes {n_classes}.")
        draws = min(lp.shape[0] for _, lp, _, _ in groups)
        logp = np.concatenate([lp[:draws] for _, lp, _, _ in groups], axis=1)
        codes = np.concatenate([c for _, _, c, _ in groups])
        log_t0 = map_log_temperature(logp, codes, w_all, 0.0, prior_sd)
        temps, sizes = {}, {}
        for key, lp, c, _ in groups:
            temps[key] = float(np.exp(map_log_temperature(lp, c, None, log_t0, pattern_sd)))
            sizes[key] = int(len(c))
        rec = cls(head=head, modalities=list(modalities), pooled=float(np.exp(log_t0)), temperatures=temps,
                  n_patients=sizes, n_calibration=int(len(uniq)))
        rows = np.arange(len(codes))
        t_rows = np.concatenate([np.full(len(c), temps[k]) for k, _, c, _ in groups])
        rec.nll_before = float(-(w_all * tempered_log_predictive(logp, 1.0)[rows, codes]).sum() / w_all.sum())
        rec.nll_after = float(-(w_all * tempered_log_predictive(logp, t_rows)[rows, codes]).sum() / w_all.sum())
        return rec

    # ---------------------------------------------------------------- apply
    def patient_temperatures(self, presence: np.ndarray) -> np.ndarray:
        """``T`` per patient, shape (n,), from the presence table (n, len(modalities)) in model order."""
        presence = np.asarray(presence, dtype=bool)
        out = np.full(presence.shape[0], self.pooled, dtype=float)
        if not self.temperatures:
            return out
        rows, inverse = np.unique(presence, axis=0, return_inverse=True)   # one key per distinct pattern
        per_row = np.array([self.temperatures.get(pattern_key([m for m, b in zip(self.modalities, r) if b]),
                                                  self.pooled) for r in rows], dtype=float)
        return per_row[inverse.reshape(-1)]

    def apply(self, probs: np.ndarray, presence: np.ndarray) -> np.ndarray:
        """Tempered draws ``softmax(log p_s / T_i)``, shape (S, n, C), as float64.

        Parameters
        ----------
        probs : numpy.ndarray, shape (S, n, C)
        presence : numpy.ndarray of bool, shape (n, len(modalities))
        """
        t = self.patient_temperatures(presence)
        logp = np.log(np.clip(np.asarray(probs, dtype=float), _TINY, None))
        return np.exp(log_softmax(logp / t[None, :, None], axis=-1))

    # ---------------------------------------------------------- persistence
    def to_config(self) -> dict[str, Any]:
        """JSON-able record (the saved model's ``class_calibration`` entry)."""
        return {"head": self.head, "modalities": list(self.modalities), "pooled": self.pooled,
                "temperatures": dict(self.temperatures), "n_patients": dict(self.n_patients),
                "n_calibration": self.n_calibration, "nll_before": self.nll_before, "nll_after": self.nll_after}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ClassCalibration:
        nan = float("nan")
        return cls(head=str(cfg["head"]), modalities=[str(m) for m in cfg["modalities"]], pooled=float(cfg["pooled"]),
                   temperatures={str(k): float(v) for k, v in cfg.get("temperatures", {}).items()},
                   n_patients={str(k): int(v) for k, v in cfg.get("n_patients", {}).items()},
                   n_calibration=int(cfg.get("n_calibration", 0)),
                   nll_before=nan if cfg.get("nll_before") is None else float(cfg["nll_before"]),
                   nll_after=nan if cfg.get("nll_after") is None else float(cfg["nll_after"]))
