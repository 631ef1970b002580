"""Validation-based choice of survival-head settings, on training data only.

A per-dataset choice among a few :class:`bayesfuse.heads.Survival` settings (default: the
log-hazard feature layer ``hidden`` 0 or 32) by repeated random validation splits of the
TRAINING patients: every candidate is fitted on the same ``1 - validation_fraction`` part of
each split and scored on the held-out part by Harrell's C (risk = minus the posterior-mean
restricted mean survival up to the 90% quantile of the held-out event times) and by the
D-calibration p-value of the posterior-predictive ``S_i(t_i)``. A candidate counts as
*calibrated* unless at least half of its splits reject D-calibration at ``min_dcal_p``; the
calibrated candidate with the highest mean C wins (first listed on ties; if none is
calibrated, the highest mean C). Test data never enters. See docs/survival.md for the
measured choices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.exceptions import DataError
from bayesfuse.heads import Survival
from bayesfuse.metrics.survival import concordance_harrell, d_calibration

__all__ = ["SurvivalSelection", "own_time_survival", "select_survival_head", "choose_survival_candidate"]

DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = ({"hidden": 0}, {"hidden": 32})


@dataclass(frozen=True)
class SurvivalSelection:
    """Result of :func:`select_survival_head`.

    Attributes
    ----------
    best : dict
        The chosen candidate (``Survival`` field overrides).
    best_index : int
        Its position in ``candidates``.
    head : Survival
        The user's head spec with ``best`` applied (unfitted copy: pass it to ``FusionModel``).
    table : pandas.DataFrame
        One row per (candidate, split): ``candidate, split, config, n_fit, n_val, harrell_c, dcal_p``.
    summary : pandas.DataFrame
        One row per candidate: ``candidate, config, mean_c, n_dcal_fail, calibrated, chosen``.
    """

    best: dict
    best_index: int
    head: Survival
    table: pd.DataFrame
    summary: pd.DataFrame


def own_time_survival(post, head: str, time) -> np.ndarray:
    """Posterior-predictive ``S_i(t_i)`` (mean over draws) of each patient at their own time.

    Parameters
    ----------
    post : Posterior
        With survival head ``head`` over ``n`` patients.
    time : array, shape (n,)
        Positive times, in the row order of ``post``.

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    from bayesfuse.posterior import survival as ps

    t = np.asarray(time, dtype=np.float64).reshape(-1)
    lh = post.draws[head]["log_hazard"]                      # (S, n, K)
    if lh.shape[1] != t.shape[0]:
        raise DataError(f"time has {t.shape[0]} values for {lh.shape[1]} patients; pass one time per patient.")
    return ps.survival_at_own_times(lh, post.survival_cuts(head), t).mean(axis=0)


def choose_survival_candidate(table: pd.DataFrame, n_candidates: int, min_dcal_p: float = 0.05
                              ) -> tuple[int, pd.DataFrame]:
    """Selection rule of :func:`select_survival_head` on a per-(candidate, split) score table.

    ``table`` has columns ``candidate`` (0..n_candidates-1), ``harrell_c``, ``dcal_p``. Returns the
    chosen index and the per-candidate summary (``mean_c, n_dcal_fail, calibrated, chosen``).
    """
    rows = []
    for k in range(n_candidates):
        sub = table.loc[table["candidate"] == k]
        if sub.empty:
            raise DataError(f"No score for candidate {k}; every candidate needs at least one split.")
        n_fail = int((sub["dcal_p"] <= min_dcal_p).sum())
        rows.append({"candidate": k, "mean_c": float(sub["harrell_c"].mean()), "n_dcal_fail": n_fail,
                     "calibrated": bool(n_fail < len(sub) / 2.0)})
    summ = pd.DataFrame(rows)
    pool = summ.loc[summ["calibrated"]] if summ["calibrated"].any() else summ
    best = int(pool.loc[pool["mean_c"].idxmax(), "candidate"])        # idxmax: first on ties
    summ["chosen"] = summ["candidate"] == best
    return best, summ


def select_survival_head(train, head: str = "survival", heads: dict | None = None,
                         candidates=DEFAULT_CANDIDATES, n_splits: int = 3, validation_fraction: float = 0.2,
                         seed: int = 1, model_kwargs: dict | None = None, fit_kwargs: dict | None = None,
                         num_samples: int = 200, min_dcal_p: float = 0.05) -> SurvivalSelection:
    """Choose survival-head settings by repeated validation splits of the training data.

    Parameters
    ----------
    train : MultiModalData
        Training patients only (the selection never sees test data).
    head : str
        Key of the survival head in ``heads``.
    heads : dict, optional
        Heads of the model as for ``FusionModel`` (default ``{head: Survival()}``); only ``heads[head]``
        is varied.
    candidates : sequence of dict
        ``Survival`` field overrides to compare (default ``hidden`` 0 vs 32).
    n_splits : int
        Random validation splits (split ``s`` uses seed ``seed + s`` for the partition and the fit).
    validation_fraction : float
        Share of the patients with a known positive survival time held out per split.
    model_kwargs, fit_kwargs : dict, optional
        Passed to ``FusionModel`` / ``FusionModel.fit`` (e.g. ``latent_dim``, ``max_epochs``).
    num_samples : int
        Posterior draws per validation prediction.
    min_dcal_p : float
        D-calibration level (see the module docstring for the rule).

    Returns
    -------
    SurvivalSelection
    """
    from bayesfuse.model.fusion_model import FusionModel

    heads = dict(heads) if heads is not None else {head: Survival()}
    spec = heads.get(head)
    if not isinstance(spec, Survival):
        raise DataError(f"heads[{head!r}] must be a bf.heads.Survival spec; got {type(spec).__name__}.")
    candidates = [dict(c) for c in candidates]
    if not candidates:
        raise DataError("candidates is empty; pass at least one dict of Survival overrides, e.g. {'hidden': 0}.")
    fields = {f.name for f in dataclasses.fields(Survival)}
    for c in candidates:
        bad = set(c) - fields
        if bad:
            raise DataError(f"Unknown Survival field(s) {sorted(bad)} in candidate {c}; valid: {sorted(fields)}.")
    if n_splits < 1 or not 0 < validation_fraction < 1:
        raise DataError(f"n_splits={n_splits} must be >= 1 and validation_fraction={validation_fraction} in (0, 1).")
    t_all = pd.to_numeric(train.targets[spec.time], errors="coerce").to_numpy(float)
    labelled = np.flatnonzero(np.isfinite(t_all) & (t_all > 0)
                              & np.isfinite(pd.to_numeric(train.targets[spec.event], errors="coerce").to_numpy(float)))
    n_val = int(round(validation_fraction * labelled.size))
    if n_val < 10 or labelled.size - n_val < 10:
        raise DataError(f"{labelled.size} labelled training patients are too few for a {validation_fraction:.0%} "
                        "validation split (need >= 10 on each side).")
    ids = np.asarray(train.sample_ids)
    model_kwargs = dict(model_kwargs or {})
    fit_kwargs = {"progress": False, **(fit_kwargs or {})}
    rows = []
    for s in range(n_splits):
        rng = np.random.RandomState(seed + s)
        val_ids = ids[labelled[rng.permutation(labelled.size)[:n_val]]]
        is_val = np.isin(ids, val_ids)
        fit_part, val_part = train.subset(ids=ids[~is_val]), train.subset(ids=ids[is_val])
        t = pd.to_numeric(val_part.targets[spec.time]).to_numpy(float)
        e = pd.to_numeric(val_part.targets[spec.event]).to_numpy(float).astype(bool)
        tau = float(np.quantile(t[e], 0.9)) if e.sum() >= 5 else float(np.quantile(t, 0.9))
        for k, cand in enumerate(candidates):
            cand_heads = {**heads, head: dataclasses.replace(spec, **cand)}
            model = FusionModel(fit_part, heads=cand_heads, **model_kwargs)
            model.fit(seed=seed + s, **fit_kwargs)
            post = model.predict(val_part, num_samples=num_samples, seed=seed + s)
            risk = -post.restricted_mean_survival(head, tau).mean(axis=0)
            rows.append({"candidate": k, "split": s, "config": str(cand), "n_fit": int((~is_val).sum()),
                         "n_val": int(is_val.sum()), "harrell_c": concordance_harrell(t, e, risk),
                         "dcal_p": d_calibration(own_time_survival(post, head, t), e).p_value})
    table = pd.DataFrame(rows)
    best, summ = choose_survival_candidate(table, len(candidates), min_dcal_p)
    summ.insert(1, "config", [str(c) for c in candidates])
    return SurvivalSelection(best=candidates[best], best_index=best,
                             head=dataclasses.replace(spec, **candidates[best]), table=table, summary=summ)
