"""Survival targets: validation, the non-positive-time policy, the time grid and encoding.

Called from :mod:`bayesfuse.model.targets` for :class:`bayesfuse.heads.Survival` heads.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesfuse.distributions.piecewise_hazard import make_cuts
from bayesfuse.exceptions import ArgumentError, DataError, DataWarning
from bayesfuse.heads import Survival

__all__ = ["auto_smoothness", "fit_survival_spec", "encode_survival", "survival_arrays", "fit_survival_covariates"]


def _read_columns(key: str, spec: Survival, targets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """time (n,) float, event (n,) float, known (n,) bool from the target columns (no time policy yet)."""
    try:
        time = pd.to_numeric(targets[spec.time], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(f"Head {key!r}: time column {spec.time!r} must be numeric (empty cell = unknown); "
                        f"{exc}.") from None
    ev_col = targets[spec.event]
    if ev_col.dtype == bool:
        event = ev_col.to_numpy(dtype=np.float64)
    else:
        try:
            event = pd.to_numeric(ev_col, errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise DataError(f"Head {key!r}: event column {spec.event!r} must be 0/1 (1 = event, 0 = censored; "
                            "empty cell = unknown).") from None
    bad_ev = ~np.isnan(event) & (event != 0) & (event != 1)
    if bad_ev.any():
        rows = targets.index[bad_ev][:5].tolist()
        raise DataError(f"Head {key!r}: event column {spec.event!r} has values other than 0/1 "
                        f"(rows {rows}, values {np.unique(event[bad_ev])[:5].tolist()}); code 1 = event, "
                        "0 = censored, empty = unknown.")
    if np.isinf(time).any():
        rows = targets.index[np.isinf(time)][:5].tolist()
        raise DataError(f"Head {key!r}: time column {spec.time!r} has infinite values (rows {rows}); give the "
                        "last follow-up time with event = 0 instead.")
    known = ~np.isnan(time) & ~np.isnan(event)
    return time, event, known


def survival_arrays(key: str, spec: Survival, targets: pd.DataFrame, strict: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``time, event, known`` arrays (n,) of a targets table, with the time policy applied.

    Parameters
    ----------
    key : str
        Head name (for messages).
    spec : Survival
    targets : pandas.DataFrame
        Must contain ``spec.time`` and ``spec.event``.
    strict : bool
        ``True`` (training data): times <= 0 follow ``spec.nonpositive_times``; with
        ``"error"`` they raise a :class:`DataError` naming the rows. ``False`` (prediction
        time, where targets are not used): such rows are simply marked unknown.

    Returns
    -------
    time : ndarray (n,) float64
        Follow-up times (> 0 where known; 1.0 placeholder where unknown).
    event : ndarray (n,) float64
        1 = event, 0 = censored (0 where unknown).
    known : ndarray (n,) bool
    """
    time, event, known = _read_columns(key, spec, targets)
    nonpos = known & (time <= 0)
    if nonpos.any():
        policy = spec.nonpositive_times if strict else "drop"
        rows = targets.index[nonpos].tolist()
        if policy == "error":
            shown = ", ".join(f"{r} (time={t:g})" for r, t in zip(rows[:10], time[nonpos][:10]))
            more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            raise DataError(
                f"Head {key!r}: {len(rows)} patient(s) have follow-up time <= 0 in column {spec.time!r}: "
                f"{shown}{more}. Survival times must be > 0. Fix the data, or opt in with "
                f"bf.heads.Survival(..., nonpositive_times='shift') (replace them by half the smallest "
                f"positive time) or nonpositive_times='drop' (treat their survival label as unknown; the "
                f"patients still train the rest of the model).")
        if policy == "shift":
            shift = spec.shift_time
            if shift is None:  # fit_survival_spec fixes it from the training targets; fallback for direct calls
                pos = time[known & (time > 0)]
                if pos.size == 0:
                    raise DataError(f"Head {key!r}: no positive follow-up time to shift the non-positive ones to.")
                shift = 0.5 * pos.min()
            time = np.where(nonpos, float(shift), time)
        else:  # drop
            known = known & ~nonpos
    time = np.where(known, time, 1.0)
    event = np.where(known, event, 0.0)
    return time, event, known


def fit_survival_spec(key: str, spec: Survival, targets: pd.DataFrame) -> Survival:
    """Validate a survival head's training targets and fit its time grid (in place).

    Sets ``spec.cuts`` (inner cut points at quantiles of the *training* event times, see
    :func:`bayesfuse.distributions.piecewise_hazard.make_cuts`) unless the user gave cuts,
    and ``spec.baseline`` (crude log event rate per piece, used to centre the prior and to
    initialise the guide).

    Raises
    ------
    DataError
        No patient with a known time and event, malformed columns, times <= 0 under
        ``nonpositive_times="error"``, or user cuts that are not positive and increasing.
    """
    if not isinstance(spec.n_intervals, (int, np.integer)) or isinstance(spec.n_intervals, bool) \
            or spec.n_intervals < 1:
        raise ArgumentError(f"Head {key!r}: n_intervals={spec.n_intervals!r} must be a positive integer.")
    if not (spec.smoothness == "auto" or (isinstance(spec.smoothness, (int, float, np.floating))
                                          and not isinstance(spec.smoothness, bool) and spec.smoothness > 0)):
        raise ArgumentError(f"Head {key!r}: smoothness={spec.smoothness!r} must be a number > 0 or 'auto'.")
    if int(spec.hidden) < 0:
        raise ArgumentError(f"Head {key!r}: hidden={spec.hidden!r} must be >= 0 (0 = linear in z).")
    if spec.nonpositive_times == "shift" and spec.shift_time is None:
        # one replacement time for every store built from this cohort (train, validation), saved with the model
        t_raw, _, k_raw = _read_columns(key, spec, targets)
        pos = t_raw[k_raw & (t_raw > 0)]
        if pos.size:
            spec.shift_time = float(0.5 * pos.min())
    time, event, known = survival_arrays(key, spec, targets, strict=True)
    if not known.any():
        raise DataError(f"Head {key!r}: no training patient has both {spec.time!r} and {spec.event!r}; a "
                        "survival head needs labelled patients.")
    t, e = time[known], event[known]
    if not np.any(e > 0):
        warnings.warn(f"Head {key!r}: no event among the {int(known.sum())} training patient(s) with follow-up "
                      f"({spec.event!r} is 0 everywhere): the hazard cannot be learned from these data and comes "
                      "from the prior only. Check the event coding (1 = event, 0 = censored).",
                      DataWarning, stacklevel=4)
    if spec.cuts is None:
        cuts = make_cuts(t, e, int(spec.n_intervals))
    else:
        cuts = np.asarray(spec.cuts, dtype=np.float64).reshape(-1)
        if cuts.size and (not np.all(np.isfinite(cuts)) or np.any(cuts <= 0) or np.any(np.diff(cuts) <= 0)):
            raise DataError(f"Head {key!r}: cuts={spec.cuts!r} must be finite, > 0 and strictly increasing "
                            "(inner cut points only, without 0 and inf).")
    spec.cuts = [float(c) for c in cuts]
    # crude piecewise rate: events / exposure per piece (+0.5 event: finite with no events)
    lower = np.concatenate([[0.0], cuts])
    width = np.concatenate([cuts, [np.inf]]) - lower
    expo = np.minimum(np.clip(t[:, None] - lower, 0.0, None), width).sum(0)
    piece = np.searchsorted(cuts, t, side="right")
    n_ev = np.bincount(piece, weights=e, minlength=cuts.size + 1)
    spec.baseline = [float(v) for v in np.log((n_ev + 0.5) / np.maximum(expo, 1e-12))]
    if spec.smoothness == "auto":
        spec.smoothness = auto_smoothness(float(e.sum()), cuts.size + 1)
    return spec


def auto_smoothness(n_events: float, n_pieces: int) -> float:
    """Default random-walk step sd of the survival head: ``clip(0.025 sqrt(n_events / n_pieces), 0.1, 0.5)``.

    Few events per piece cannot resolve a hazard whose shape changes over time, and a wide random
    walk then spreads the posterior predictive over time (D-calibration failed on the cohort zoo's
    100- and 200-patient rows of metabric, support and whas at 0.5, passed at 0.1); with many events
    per piece (support, 4,800 events) 0.1 was too stiff (D-calibration p 0.25 at 0.5, 0.03 at 0.1).
    Measured in docs/model.md ("Defaults chosen on the cohort zoo").

    Parameters
    ----------
    n_events : float
        Events among the training patients with a survival label.
    n_pieces : int
        Pieces of the hazard's time grid (cut points at event-time quantiles, so about
        ``n_events / n_pieces`` events each).
    """
    per_piece = max(float(n_events), 0.0) / max(int(n_pieces), 1)
    return float(np.clip(0.025 * np.sqrt(per_piece), 0.1, 0.5))


def encode_survival(key: str, spec: Survival, targets: pd.DataFrame | None, n: int,
                    strict: bool) -> dict[str, np.ndarray]:
    """Numeric survival targets of ``n`` patients.

    Returns
    -------
    dict with ``time`` (n,) float64, ``event`` (n,) float64 and ``known`` (n,) float64 (1 =
    the patient's survival label enters the likelihood). Missing columns at prediction time
    (``strict=False``) give all-unknown targets.
    """
    cols = spec.target_columns()
    if targets is None or any(c not in targets.columns for c in cols):
        if strict and targets is not None:
            missing = [c for c in cols if c not in targets.columns]
            raise DataError(f"Head {key!r} needs target column(s) {missing}; add them to the targets table.")
        return {"time": np.ones(n), "event": np.zeros(n), "known": np.zeros(n)}
    if len(targets) != n:
        raise DataError(f"Head {key!r}: targets have {len(targets)} rows for {n} patients.")
    time, event, known = survival_arrays(key, spec, targets, strict=strict)
    return {"time": time, "event": event, "known": known.astype(np.float64)}


def fit_survival_covariates(key: str, spec: Survival, transforms: dict) -> Survival:
    """Check a survival head's ``covariates`` against the model's modalities; set ``covariate_dims`` (in place).

    Parameters
    ----------
    key : str
        Head name (for messages).
    spec : Survival
    transforms : dict[str, ModalityTransform]
        The model's fitted modality transforms, in model order.

    Raises
    ------
    DataError
        A name that is not a modality of the model, or a non-Gaussian modality (the direct
        covariate path uses the standardised encoder inputs, and the decoder mean in that
        same space for absent values, which only Gaussian decoders provide).
    """
    if not spec.covariates:
        spec.covariate_dims = None
        return spec
    unknown = [m for m in spec.covariates if m not in transforms]
    if unknown:
        raise DataError(f"Head {key!r}: covariates={spec.covariates} names unknown modalities {unknown}; the "
                        f"model's modalities are {list(transforms)}.")
    bad = {m: transforms[m].likelihood for m in spec.covariates if transforms[m].likelihood != "gaussian"}
    if bad:
        raise DataError(f"Head {key!r}: covariates must be Gaussian modalities (standardised inputs, decoder "
                        f"mean for absent values); {bad} are not. Drop them from covariates= or pass "
                        f"likelihoods={{{next(iter(bad))!r}: 'gaussian'}} to the model.")
    spec.covariate_dims = [int(transforms[m].n_features) for m in spec.covariates]
    return spec
