"""Calibrated survival sections of the `bayesfuse evaluate` report: lower bound, abstention at a horizon, multi-task.

Called by :func:`bayesfuse.evaluation.report.build_report`; everything is fitted on the calibration half
and measured on the test half. The censoring distribution is the Kaplan-Meier estimate of the calibration
half's censoring (the report has no training outcomes), so the survival guarantees are approximate there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["default_horizon", "multitask_table", "survival_calibration"]


def default_horizon(time, event, censoring) -> float:
    """Horizon of the high / low call when none is given.

    The Kaplan-Meier median survival of ``(time, event)`` (``lifelines.KaplanMeierFitter``) when the
    censoring model still keeps >= 40% of patients followed there (``censoring.at_least(median) >= 0.4``),
    else the median event time. Uses the calibration (or training) outcomes only.
    """
    from lifelines import KaplanMeierFitter

    t, e = np.asarray(time, dtype=float), np.asarray(event, dtype=float).astype(bool)
    med = float(KaplanMeierFitter().fit(t, e).median_survival_time_)
    if np.isfinite(med) and float(censoring.at_least(med)) >= 0.4:
        return med
    return float(np.median(t[e])) if e.any() else float(np.median(t))


def survival_calibration(post, cal_ids, test_ids, targets: pd.DataFrame, head: str, out, max_risk: float,
                         delta: float, alpha: float, horizon: float | None, seed: int, starts: int,
                         save) -> dict:
    """Fit ``Abstainer`` (at ``horizon``) and ``SurvivalBound`` on ``cal_ids``; measure them on ``test_ids``.

    Returns a dict with ``tables`` (``abstention``, ``lower_bound``), ``figures``
    (``risk_coverage``), ``guarantees`` (``abstention``, ``lower_bound``) and the abstainer's
    ``threshold``, ``certified``, ``coverage``, ``error`` (IPCW), ``error_ci`` (complete cases) and ``horizon``.
    ``save(fig, path) -> path`` writes a figure.
    """
    from bayesfuse.calibration import Abstainer, CalibrationWarning, KaplanMeierCensoring, SurvivalBound
    from bayesfuse.calibration import subset_posterior as sub
    from bayesfuse.calibration.censoring import status_at
    from bayesfuse.plotting import risk_coverage_plot

    spec = post.heads[head]
    cal, test = sub(post, cal_ids), sub(post, test_ids)
    tc = targets.loc[cal_ids]
    km = KaplanMeierCensoring.from_targets(tc, spec.time, spec.event)
    tau = float(horizon) if horizon is not None else default_horizon(tc[spec.time], tc[spec.event], km)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        ab = Abstainer(max_risk=max_risk, delta=delta, starts=starts, seed=seed).fit(
            cal, targets, head, horizon=tau, censoring=km)
        sb = SurvivalBound(alpha=alpha, seed=seed).fit(cal, targets, head, censoring=km)
    rc = ab.risk_coverage(test, targets)
    bc = sb.coverage(test, targets)
    dec = ab.predict(test)
    abstention = pd.DataFrame([{
        "horizon": tau, "calibration patients": len(cal_ids), "test patients": rc.n,
        "certified threshold": float(ab.threshold_), "certified": bool(ab.certified_), "test coverage": rc.coverage,
        "wrong calls among accepted (IPCW)": rc.error_ipcw,
        "wrong calls, known status": f"{rc.n_errors_known}/{rc.n_known_accepted}",
        "95% CI (known status)": f"[{rc.ci_low:.3f}, {rc.ci_high:.3f}]", "max_risk": max_risk, "delta": delta}])
    lower = pd.DataFrame([{
        "miscoverage alpha": alpha, "cut-off c0": sb.horizon_, "target coverage": 1 - alpha, "test patients": bc.n,
        "coverage (known status)": bc.coverage_known, "n known": bc.n_known, "coverage (IPCW)": bc.coverage_ipcw,
        "coverage (worst case)": bc.coverage_worst_case, "3 binomial sd": 3 * bc.binomial_sd,
        "mean bound": bc.mean_bound, "median bound": bc.median_bound, "share at c0": bc.share_at_cutoff}])

    t = targets.loc[test_ids, spec.time].to_numpy(float)
    e = targets.loc[test_ids, spec.event].to_numpy(float).astype(bool)
    known, by = status_at(t, e, tau)
    correct = (dec["prediction"].to_numpy() == "high") == by
    fig, ax = _axes()
    if known.sum() >= 2:
        risk_coverage_plot(dec["score"].to_numpy()[known], correct[known], ax=ax)
        ax.axhline(max_risk, color="tab:red", ls=":", label=f"max_risk = {max_risk:g}")
        if rc.n_accepted:
            ax.plot([rc.coverage], [rc.error_ipcw], "D", color="tab:green", ms=7,
                    label=f"certified (coverage {rc.coverage:.2f}, IPCW error {rc.error_ipcw:.3f})")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "fewer than 2 test patients with known status", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"Risk-coverage at horizon {tau:g}: {head} (known status)")
    figures = {"risk_coverage": save(fig, out / f"risk_coverage_{head}.png")}
    return {"tables": {"abstention": abstention.set_index("horizon"), "lower_bound": lower.set_index("miscoverage alpha")},
            "figures": figures, "guarantees": {"abstention": ab.guarantee_, "lower_bound": sb.guarantee_},
            "threshold": float(ab.threshold_), "certified": bool(ab.certified_), "coverage": rc.coverage,
            "error": rc.error_ipcw, "error_ci": (rc.ci_low, rc.ci_high), "horizon": tau}


def multitask_table(post, targets: pd.DataFrame, heads: dict, levels: dict, delta: float, horizon,
                    calibration_fraction: float, seed: int, starts: int) -> tuple[pd.DataFrame, str]:
    """Joint abstainer over ``levels`` heads on one patient-level split of every patient with a target.

    Returns the per-head test table (among *jointly* accepted test patients) and the guarantee text.
    """
    from bayesfuse._labels import label_codes
    from bayesfuse.calibration import Abstainer, CalibrationWarning, KaplanMeierCensoring, make_splits
    from bayesfuse.calibration import subset_posterior as sub
    from bayesfuse.heads import Survival

    ids = pd.Index([str(s) for s in post.sample_ids])
    tg = targets.copy()
    tg.index = tg.index.map(str)
    tg = tg.reindex(ids)
    for h in levels:                       # labels outside the model's classes cannot be scored: unknown here
        if not isinstance(heads[h], Survival):
            col = heads[h].column or h
            codes = label_codes(tg[col].to_numpy(dtype=object), post.classes(h))
            tg[col] = tg[col].where(codes >= 0)
    strat_head = next((h for h in levels if not isinstance(heads[h], Survival)), None)
    strata = tg[heads[strat_head].column or strat_head] if strat_head else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        split = make_splits(ids, strata, fractions={"calibration": calibration_fraction,
                                                    "test": 1 - calibration_fraction}, seed=seed)
    cal_ids, test_ids = ids[split.to_numpy() == "calibration"], ids[split.to_numpy() == "test"]
    censoring, tau = None, horizon
    for h in levels:
        if isinstance(heads[h], Survival):
            spec = heads[h]
            tc = tg.loc[cal_ids, [spec.time, spec.event]].apply(pd.to_numeric, errors="coerce").dropna()
            tc = tc[tc[spec.time] > 0]
            censoring = KaplanMeierCensoring.from_targets(tc, spec.time, spec.event)
            if tau is None:
                tau = default_horizon(tc[spec.time], tc[spec.event], censoring)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        ma = Abstainer(max_risk=levels, delta=delta, starts=starts, seed=seed).fit(
            sub(post, cal_ids), tg, horizon=tau, censoring=censoring)
    rc = ma.risk_coverage(sub(post, test_ids), tg)
    rows = []
    for h, r in rc.items():
        surv = isinstance(heads[h], Survival)
        rows.append({"head": h, "kind": "survival" if surv else "categorical", "max_risk": levels[h],
                     "horizon": tau if surv else float("nan"), "test patients with target": r.n,
                     "jointly accepted": r.n_accepted, "coverage": r.coverage,
                     "error among jointly accepted": r.error_ipcw if surv else r.error,
                     "error measured as": "IPCW wrong calls" if surv else "misclassification",
                     "within max_risk": r.within_target})
    table = pd.DataFrame(rows).set_index("head")
    table.attrs.update({"threshold": float(ma.threshold_), "certified": bool(ma.certified_),
                        "n_calibration": len(cal_ids), "n_test": len(test_ids)})
    return table, ma.guarantee_


def _axes():
    from bayesfuse.evaluation._figures import new_axes

    return new_axes()
