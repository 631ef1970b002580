"""`bayesfuse evaluate`: a calibration report (markdown + PNG figures) for a fitted model.

>>> rep = build_report(model, data, "report/", max_risk=0.05, delta=0.1)
>>> rep.markdown          # path of report.md
>>> rep.heads["subtype"].coverage, rep.heads["subtype"].error

The labelled patients of ``data`` are split (patient level, stratified) into a calibration
half and a test half. An :class:`~bayesfuse.calibration.Abstainer` is certified on the
calibration half and everything reported is measured on the test half, which is used for
nothing else.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesfuse._labels import label_codes
from bayesfuse.evaluation._figures import DPI, FIGSIZE
from bayesfuse.evaluation._figures import new_axes as _new_axes
from bayesfuse.exceptions import DataError

__all__ = ["FIGSIZE", "DPI", "HeadReport", "Report", "build_report", "markdown_table"]

CONFORMAL_ALPHAS: tuple[float, ...] = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class HeadReport:
    """Test-half results of one head (see :func:`build_report`).

    Attributes
    ----------
    head : str
    kind : {"categorical", "survival"}
    n_calibration, n_test : int
        Labelled patients in each half.
    threshold : float
        Certified threshold on the max class probability (``inf`` = nothing certified; NaN for survival).
    certified : bool
    coverage : float
        Share of test patients accepted.
    error : float
        Error among accepted test patients (NaN when none accepted).
    error_ci : tuple of float
        Clopper-Pearson 95% interval of ``error``.
    accuracy : float
        Accuracy on all test patients (no abstention).
    tables : dict[str, pandas.DataFrame]
        The tables written to the markdown (``metrics``, ``per_class``, ``per_pattern``, ``conformal``;
        survival: ``survival``, ``km``, ``abstention`` (high / low call at the horizon), ``lower_bound``).
    figures : dict[str, pathlib.Path]
        Figure name -> PNG path.
    guarantees : dict[str, str]
        Survival heads: the ``abstention`` and ``lower_bound`` guarantees in words.
    horizon : float
        Survival heads: horizon of the high / low call (NaN for categorical heads).

    For a survival head ``threshold`` / ``certified`` / ``coverage`` describe the survival Abstainer,
    ``error`` is its IPCW wrong-call rate among accepted test patients and ``error_ci`` the
    Clopper-Pearson interval of the complete-case rate.
    """

    head: str
    kind: str
    n_calibration: int
    n_test: int
    threshold: float = float("nan")
    certified: bool = False
    coverage: float = float("nan")
    error: float = float("nan")
    error_ci: tuple[float, float] = (float("nan"), float("nan"))
    accuracy: float = float("nan")
    guarantee: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    guarantees: dict[str, str] = field(default_factory=dict)
    horizon: float = float("nan")


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    out : pathlib.Path
        Output folder.
    markdown : pathlib.Path
        ``out / "report.md"``.
    heads : dict[str, HeadReport]
    figures : list of pathlib.Path
        Every PNG written.
    max_risk, delta : float
    seconds : float
        Wall time of :func:`build_report` (prediction included).
    multitask : pandas.DataFrame or None
        Joint abstainer over every reported head (when there are several): one row per head, among the
        jointly accepted test patients; ``multitask.attrs`` holds the threshold and split sizes.
    multitask_guarantee : str
    """

    out: Path
    markdown: Path
    heads: dict[str, HeadReport]
    figures: list[Path]
    max_risk: float
    delta: float
    seconds: float
    multitask: pd.DataFrame | None = None
    multitask_guarantee: str = ""


# ------------------------------------------------------------------------------ markdown
def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "-"
        if np.isinf(v):
            return "inf"
        return f"{v:.3f}"
    if isinstance(v, (tuple, list)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """GitHub markdown table of a DataFrame (floats to 3 decimals, NaN as ``-``)."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers
def _pattern_name(pattern: tuple) -> str:
    return "+".join(pattern) if pattern else "(none)"


def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": every PNG is exactly FIGSIZE * DPI pixels
    plt.close(fig)
    return path


def _selective(accepted: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    n, k = len(accepted), int(accepted.sum())
    err = int((~correct[accepted]).sum())
    return {"coverage": k / n if n else float("nan"), "n_accepted": k,
            "error_accepted": err / k if k else float("nan")}


def _load_inputs(model, data):
    import bayesfuse as bf

    if isinstance(model, (str, Path)):
        model = bf.FusionModel.load(model)
    if isinstance(data, (str, Path)):
        data = bf.MultiModalData.read_dir(data)
    if not isinstance(data, bf.MultiModalData):
        raise DataError(f"data must be a bf.MultiModalData or a dataset folder, got {type(data).__name__}.")
    return model, data


# ----------------------------------------------------------------------- categorical
def _categorical_section(post, cal_ids, test_ids, labels, head, out, max_risk, delta, seed, starts):
    import bayesfuse as bf
    from bayesfuse.calibration import ABSTAIN, Abstainer, ConformalSets, class_coverage, subset_posterior
    from bayesfuse.calibration._common import missingness_patterns
    from bayesfuse.metrics import (
        aurc,
        classification_metrics,
        classwise_ece,
        ece,
        ece_consistency,
        encode_labels,
    )
    from bayesfuse.plotting import confusion_matrix_plot, reliability_diagram, risk_coverage_plot

    classes = post.classes(head)
    cal, test = subset_posterior(post, cal_ids), subset_posterior(post, test_ids)
    y_cal, y_test = labels.loc[cal_ids], labels.loc[test_ids]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.calibration.CalibrationWarning)
        abst = Abstainer(max_risk=max_risk, delta=delta, starts=starts).fit(cal, y_cal, head=head)
    rc = abst.risk_coverage(test, y_test)
    dec = abst.predict(test)

    probs = np.asarray(test.probs(head), dtype=np.float64).mean(axis=0)
    probs /= probs.sum(axis=1, keepdims=True)
    y = encode_labels(y_test.to_numpy(), classes)
    pred = probs.argmax(axis=1)
    correct = pred == y
    conf = probs.max(axis=1)
    accepted = dec["accepted"].to_numpy()

    m = classification_metrics(probs, y)
    cons = ece_consistency(probs, y)
    metrics = pd.DataFrame([{
        "n_test": m.n, "accuracy": m.accuracy, "macro_f1": m.macro_f1, "nll": m.nll, "brier": m.brier,
        "ece (15 equal-width)": m.ece, "ece (15 equal-mass)": ece(probs, y, strategy="quantile"),
        "ece floor if calibrated": cons.null_mean, "ece consistency p": cons.p_value,
        "classwise ece": classwise_ece(probs, y), "aurc": aurc(conf, correct)}]).set_index("n_test")

    rows = []
    for c, name in enumerate(classes):
        sel = y == c
        if not sel.any():
            continue
        rows.append({"class": name, "n": int(sel.sum()), "accuracy": float(correct[sel].mean()),
                     **_selective(accepted[sel], correct[sel]),
                     "predicted as (accepted)": int((accepted & (pred == c)).sum())})
    per_class = pd.DataFrame(rows).set_index("class")

    pats = missingness_patterns(test).map(_pattern_name).to_numpy()
    rows = []
    for pat in sorted(set(pats), key=lambda s: (-s.count("+"), s)):
        sel = pats == pat
        rows.append({"pattern": pat, "n": int(sel.sum()), "accuracy": float(correct[sel].mean()),
                     "ece": ece(probs[sel], y[sel]), **_selective(accepted[sel], correct[sel])})
    per_pattern = pd.DataFrame(rows).set_index("pattern")

    rows = []
    for alpha in CONFORMAL_ALPHAS:
        for method in ("lac", "aps"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bf.calibration.CalibrationWarning)
                cs = ConformalSets(alpha=alpha, method=method, seed=seed).fit(cal, y_cal, head=head)
            sets = cs.predict(test)
            cov = class_coverage(sets, y_test)
            hit = float((cov["coverage"] * cov["n"]).sum() / cov["n"].sum())
            k, n = int(round(hit * len(sets))), len(sets)
            se = math.sqrt(max((1 - alpha) * alpha, 1e-12) / n)
            rows.append({"alpha": alpha, "method": method, "target coverage": 1 - alpha,
                         "test coverage": hit, "2 s.e. (binomial)": 2 * se,
                         "worst class coverage": float(cov["coverage"].min()),
                         "mean size": float(sets["size"].mean()),
                         "singletons": float((sets["size"] == 1).mean()),
                         "empty": float((sets["size"] == 0).mean()), "n_test": n, "k_covered": k})
    conformal = pd.DataFrame(rows).drop(columns=["k_covered"]).set_index("alpha")

    figures = {}
    fig, ax = _new_axes()
    reliability_diagram(probs, y, ax=ax)
    ax.set_title(f"Reliability: {head} (test half)")
    figures["reliability"] = _savefig(fig, out / f"reliability_{head}.png")

    fig, ax = _new_axes()
    risk_coverage_plot(conf, correct, ax=ax)
    ax.axhline(max_risk, color="tab:red", ls=":", label=f"max_risk = {max_risk:g}")
    if rc.n_accepted:
        ax.axvline(rc.coverage, color="tab:green", ls="-.", lw=1)
        ax.plot([rc.coverage], [rc.error], "D", color="tab:green", ms=7,
                label=f"certified threshold {abst.threshold_:.3f}\n(test coverage {rc.coverage:.2f}, "
                      f"error {rc.error:.3f})")
    else:
        ax.plot([], [], "D", color="tab:green", label="nothing certified (abstain on all)")
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.6 * max_risk))
    ax.legend(fontsize="small")
    ax.set_title(f"Risk-coverage: {head} (test half)")
    figures["risk_coverage"] = _savefig(fig, out / f"risk_coverage_{head}.png")

    fig, ax = _new_axes()
    if accepted.any():
        confusion_matrix_plot(y[accepted], pred[accepted], classes, ax=ax)
    else:
        ax.text(0.5, 0.5, f"no accepted test patient\n(all answered {ABSTAIN!r})", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"Confusion matrix, accepted test patients ({int(accepted.sum())}/{len(accepted)})")
    figures["confusion_accepted"] = _savefig(fig, out / f"confusion_accepted_{head}.png")

    return HeadReport(head=head, kind="categorical", n_calibration=len(cal_ids), n_test=len(test_ids),
                      threshold=float(abst.threshold_), certified=bool(abst.certified_), coverage=rc.coverage,
                      error=rc.error, error_ci=(rc.ci_low, rc.ci_high), accuracy=m.accuracy,
                      guarantee=abst.guarantee_,
                      tables={"metrics": metrics, "per_class": per_class, "per_pattern": per_pattern,
                              "conformal": conformal},
                      figures=figures)


def _categorical_markdown(r: HeadReport, max_risk: float, delta: float) -> list[str]:
    sel = pd.DataFrame([{
        "calibration patients": r.n_calibration, "test patients": r.n_test,
        "certified threshold": r.threshold, "certified": r.certified, "test coverage": r.coverage,
        "test error among accepted": r.error, "95% CI": f"[{_fmt(r.error_ci[0])}, {_fmt(r.error_ci[1])}]",
        "max_risk": max_risk, "delta": delta, "accuracy without abstention": r.accuracy}])
    f = {k: v.name for k, v in r.figures.items()}
    return [
        f"## Head `{r.head}` (categorical)", "",
        "### Guarantee", "", f"> {r.guarantee}", "",
        "### Calibrated abstention (\"I don't know\")", "", markdown_table(sel, index=False), "",
        f"![risk-coverage]({f['risk_coverage']})", "",
        "### Probabilistic metrics (test half, posterior-predictive mean probabilities)", "",
        markdown_table(r.tables["metrics"]), "", f"![reliability]({f['reliability']})", "",
        "### Per class (test half)", "",
        "`coverage` = share accepted, `error_accepted` = error among accepted.", "",
        markdown_table(r.tables["per_class"]), "",
        f"![confusion matrix of accepted cases]({f['confusion_accepted']})", "",
        "### Per missingness pattern (test half)", "", markdown_table(r.tables["per_pattern"]), "",
        "### Conformal prediction sets (calibrated on the calibration half)", "",
        "Coverage should lie within about 2 binomial standard errors of `1 - alpha` "
        "(and at or above it on average over calibration draws).", "",
        markdown_table(r.tables["conformal"]), "",
    ]


# -------------------------------------------------------------------------- survival
def _survival_section(post, cal_ids, test_ids, targets, head, spec, out, calib: dict):
    from bayesfuse.calibration import subset_posterior
    from bayesfuse.evaluation.survival_report import survival_calibration
    from bayesfuse.metrics import concordance_harrell, d_calibration, km_calibration, surv_at
    from bayesfuse.plotting import d_calibration_histogram, survival_calibration_plot

    test = subset_posterior(post, test_ids)
    t = targets.loc[test_ids, spec.time].to_numpy(dtype=float)
    e = targets.loc[test_ids, spec.event].to_numpy(dtype=float).astype(bool)
    ev_times = t[e] if e.sum() >= 5 else t
    times = np.unique(np.quantile(ev_times, np.linspace(0.02, 0.98, 40)))
    times = times[times > 0]
    surv = np.asarray(test.survival_function(head, times), dtype=np.float64)
    if surv.ndim == 3:
        surv = surv.mean(axis=0)  # posterior-predictive survival, shape (n, T)
    horizon = float(np.median(ev_times))
    s_own = surv_at(surv, times, t)
    dcal = d_calibration(s_own, e)
    risk = 1.0 - surv_at(surv, times, horizon)
    km = km_calibration(t, e, surv, times, horizon=horizon)
    table = pd.DataFrame([{"n_test": len(t), "events": int(e.sum()), "horizon": horizon,
                           "harrell C (risk at horizon)": concordance_harrell(t, e, risk),
                           "D-calibration chi2": dcal.statistic, "D-calibration p": dcal.p_value}]
                         ).set_index("n_test")
    figures = {}
    fig, ax = _new_axes()
    d_calibration_histogram(dcal, ax=ax)
    figures["d_calibration"] = _savefig(fig, out / f"d_calibration_{head}.png")
    fig, ax = _new_axes()
    survival_calibration_plot(t, e, surv, times, horizon=horizon, ax=ax)
    figures["km_vs_predicted"] = _savefig(fig, out / f"km_vs_predicted_{head}.png")
    sc = survival_calibration(post, cal_ids, test_ids, targets, head, out, save=_savefig, **calib)
    figures.update(sc["figures"])
    return HeadReport(head=head, kind="survival", n_calibration=len(cal_ids), n_test=len(t),
                      threshold=sc["threshold"], certified=sc["certified"], coverage=sc["coverage"],
                      error=sc["error"], error_ci=sc["error_ci"], guarantee=sc["guarantees"]["abstention"],
                      tables={"survival": table, "km": km.set_index("group"), **sc["tables"]}, figures=figures,
                      guarantees=sc["guarantees"], horizon=sc["horizon"])


def _survival_markdown(r: HeadReport) -> list[str]:
    f = {k: v.name for k, v in r.figures.items()}
    return [
        f"## Head `{r.head}` (survival)", "",
        "Posterior-predictive survival curves on the test half.", "",
        markdown_table(r.tables["survival"]), "",
        "Mean predicted survival vs Kaplan-Meier at the horizon, by predicted-risk tertile:", "",
        markdown_table(r.tables["km"]), "",
        f"![D-calibration]({f['d_calibration']})", "", f"![KM vs predicted]({f['km_vs_predicted']})", "",
        f"### High / low risk call at horizon {r.horizon:g}, or \"I don't know\"", "",
        f"> {r.guarantees['abstention']}", "",
        "Censoring: the IPCW rate weights test patients whose status at the horizon is known by the inverse "
        "Kaplan-Meier probability of being followed that long (censoring estimated on the calibration half); "
        "the known-status count leaves out patients censored before the horizon.", "",
        markdown_table(r.tables["abstention"]), "", f"![risk-coverage]({f['risk_coverage']})", "",
        "### Lower predictive bound on the survival time", "",
        f"> {r.guarantees['lower_bound']}", "",
        "Coverage on the test half: `known status` counts patients with an event, or censored, after their "
        "bound (those censored before it are left out); `IPCW` reweights the observed misses; `worst case` "
        "counts every censored-before-bound patient as missed (a lower bound on the true coverage).", "",
        markdown_table(r.tables["lower_bound"]), "",
    ]


def _multitask_markdown(table: pd.DataFrame, guarantee: str) -> list[str]:
    a = table.attrs
    return [
        "## Several heads at once (joint \"I don't know\")", "",
        f"One patient-level split of every patient with any target ({a['n_calibration']} calibration / "
        f"{a['n_test']} test); a patient is accepted only when every head's call is confident enough "
        f"(joint threshold {_fmt(a['threshold'])}). Errors are measured among the jointly accepted test "
        "patients that have that head's target.", "",
        f"> {guarantee}", "", markdown_table(table), "",
    ]


# ---------------------------------------------------------------------------- public
def build_report(model, data, out, head: str | None = None, max_risk: float = 0.05, delta: float = 0.1,
                 calibration_fraction: float = 0.5, seed: int = 0, num_samples: int = 200,
                 starts: int = 4, survival_max_risk: float = 0.2, horizon: float | None = None,
                 alpha: float = 0.1) -> Report:
    """Calibrate an "I don't know" rule on half of the labelled patients and report on the other half.

    Parameters
    ----------
    model : FusionModel or path
        Fitted model (or a directory saved by :meth:`FusionModel.save`).
    data : MultiModalData or path
        Labelled patients NOT used to fit the model (e.g. ``data.subset(split="test")``).
    out : path
        Output folder (created): ``report.md`` plus PNG figures of ``FIGSIZE * DPI`` pixels.
    head : str, optional
        Report only this head; default: every categorical head and (when the model has one and
        the Posterior supports it) every survival head.
    max_risk, delta : float in (0, 1)
        Abstainer levels: error among accepted <= ``max_risk`` with probability >= ``1 - delta``.
    calibration_fraction : float in (0, 1)
        Share of labelled patients in the calibration half (split per head, stratified by class).
    seed : int
        Seeds the split, the posterior draws and the randomised conformal sets.
    num_samples : int
        Posterior draws per patient.
    starts : int
        Start points of the Abstainer's fallback procedure (``Abstainer(starts=...)``; 1 = plain
        fixed-sequence testing).
    survival_max_risk : float in (0, 1)
        Survival heads: tolerated share of wrong high / low calls at the horizon among accepted patients.
    horizon : float, optional
        Survival heads: horizon of the call; default :func:`~bayesfuse.evaluation.survival_report.default_horizon`
        of the calibration half.
    alpha : float in (0, 1)
        Survival heads: miscoverage of the lower predictive bound (:class:`~bayesfuse.calibration.SurvivalBound`).
        With more than one reported head, a joint Abstainer over all of them (categorical heads
        at ``max_risk``, survival heads at ``survival_max_risk``) is added (``Report.multitask``).

    Returns
    -------
    Report
    """
    import matplotlib

    matplotlib.use("Agg")
    import bayesfuse as bf
    from bayesfuse.calibration import make_splits

    t0 = time.perf_counter()
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction={calibration_fraction!r} must lie in (0, 1), e.g. 0.5.")
    model, data = _load_inputs(model, data)
    specs = dict(model.heads)
    if head is not None:
        if head not in specs:
            raise DataError(f"The model has no head {head!r}; its heads are {sorted(specs)}.")
        specs = {head: specs[head]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.exceptions.BayesFuseWarning)
        post = model.predict(data, num_samples=num_samples, seed=seed)
    targets = data.targets
    heads: dict[str, HeadReport] = {}
    skipped: list[str] = []
    notes: list[str] = []
    for key, spec in specs.items():
        if isinstance(spec, bf.heads.Categorical):
            col = spec.column or key
            if col not in targets.columns:
                skipped.append(f"`{key}`: the data has no target column {col!r}")
                continue
            lab = targets[col].dropna()
            known = pd.Series(label_codes(lab.to_numpy(), post.classes(key)) >= 0, index=lab.index)
            if not known.all():   # a class unseen in training cannot be scored: say so, never drop silently
                other = lab[~known]
                names = pd.unique(other.to_numpy())[:5].tolist()
                note = (f"`{key}`: {len(other)} patient(s) with label(s) {names} not among the model's classes "
                        f"{list(post.classes(key))} are left out of every `{key}` number below")
                notes.append(note)
                warnings.warn(note.replace("`", "") + " (check spelling / dtype, e.g. 1 vs '1', or an unseen class).",
                              bf.exceptions.DataWarning, stacklevel=2)
            lab = lab[known]
            if len(lab) < 4:
                skipped.append(f"`{key}`: only {len(lab)} labelled patient(s) with a label among the model's "
                               "classes")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bf.calibration.CalibrationWarning)
                split = make_splits(lab.index, lab, fractions={"calibration": calibration_fraction,
                                                               "test": 1 - calibration_fraction}, seed=seed)
            cal_ids = split.index[split.to_numpy() == "calibration"]
            test_ids = split.index[split.to_numpy() == "test"]
            heads[key] = _categorical_section(post, cal_ids, test_ids, lab, key, out, max_risk, delta, seed,
                                              starts)
        elif isinstance(spec, bf.heads.Survival):
            if not hasattr(post, "survival_function"):
                skipped.append(f"`{key}`: this bayesfuse version's Posterior has no survival_function")
                continue
            if spec.time not in targets.columns or spec.event not in targets.columns:
                skipped.append(f"`{key}`: the data lacks {spec.time!r} / {spec.event!r}")
                continue
            ok = targets[[spec.time, spec.event]].dropna()
            n_nonpos = int((ok[spec.time] <= 0).sum())
            if n_nonpos:   # metrics need positive times: say so, never drop silently
                notes.append(f"`{key}`: {n_nonpos} patient(s) with {spec.time!r} <= 0 are left out of every "
                             f"`{key}` number below (survival metrics need positive times)")
            ok = ok[ok[spec.time] > 0]
            if len(ok) < 10:
                skipped.append(f"`{key}`: only {len(ok)} patient(s) with follow-up")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bf.calibration.CalibrationWarning)
                split = make_splits(ok.index, ok[spec.event].astype(int),
                                    fractions={"calibration": calibration_fraction,
                                               "test": 1 - calibration_fraction}, seed=seed)
            cal_ids = split.index[split.to_numpy() == "calibration"]
            test_ids = split.index[split.to_numpy() == "test"]
            heads[key] = _survival_section(post, cal_ids, test_ids, targets, key, spec, out,
                                           {"max_risk": survival_max_risk, "delta": delta, "alpha": alpha,
                                            "horizon": horizon, "seed": seed, "starts": starts})
        else:
            skipped.append(f"`{key}`: head kind {spec.kind!r} is not reported")
    if not heads:
        raise DataError("Nothing to report: " + ("; ".join(skipped) or "the model has no head")
                        + ". Pass labelled data for a categorical or survival head.")

    multitask, multitask_guarantee = None, ""
    if len(heads) > 1:
        from bayesfuse.evaluation.survival_report import multitask_table

        levels = {k: (survival_max_risk if r.kind == "survival" else max_risk) for k, r in heads.items()}
        tau = next((r.horizon for r in heads.values() if r.kind == "survival"), None) if horizon is None else horizon
        multitask, multitask_guarantee = multitask_table(post, targets, dict(model.heads), levels, delta, tau,
                                                         calibration_fraction, seed, starts)

    pats = data.missingness_patterns()
    lines = [
        "# bayesfuse calibration report", "",
        f"Model: `{model!r}`", "",
        f"Data: {data.n_samples} patients ({getattr(data, 'name', None) or 'unnamed'}); missingness patterns: "
        + ", ".join(f"{k} = {v}" for k, v in pats.items()) + ".", "",
        f"Protocol: labelled patients are split per head (patient level, stratified by class, seed {seed}) "
        f"into a calibration half ({calibration_fraction:.0%}) and a test half. The abstention threshold and "
        "the conformal quantiles are fitted on the calibration half only; every number below is measured on "
        f"the test half. Posterior draws per patient: {num_samples}. Target: error among accepted patients "
        f"<= {max_risk:g} with probability >= {1 - delta:g} over the calibration draw (Learn-then-Test, "
        "exact binomial p-values, " + ("fixed-sequence testing" if starts == 1 else
                                       f"fallback procedure from up to {starts} start points") + ")"
        + (f"; survival heads: wrong high / low calls at the horizon <= {survival_max_risk:g}, and a lower "
           f"bound on the survival time covering >= {1 - alpha:g} (patients are split stratified by event)"
           if any(r.kind == "survival" for r in heads.values()) else "") + ".", "",
    ]
    if skipped:
        lines += ["Not reported: " + "; ".join(skipped) + ".", ""]
    if notes:
        lines += ["Left out: " + "; ".join(notes) + ".", ""]
    for r in heads.values():
        lines += _categorical_markdown(r, max_risk, delta) if r.kind == "categorical" else _survival_markdown(r)
    if multitask is not None:
        lines += _multitask_markdown(multitask, multitask_guarantee)
    seconds = time.perf_counter() - t0
    lines += [f"_Rendered in {seconds:.1f} s._", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    figures = [p for r in heads.values() for p in r.figures.values()]
    return Report(out=out, markdown=md, heads=heads, figures=figures, max_risk=float(max_risk),
                  delta=float(delta), seconds=seconds, multitask=multitask, multitask_guarantee=multitask_guarantee)
