"""Evaluation plots (matplotlib). Every function takes ``ax=None`` (a new figure is made) and returns ``ax``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bayesfuse.exceptions import DataError
from bayesfuse.metrics import aurc, ece, risk_coverage_curve, surv_at
from bayesfuse.metrics._validation import (
    check_labels,
    check_prob_draws,
    check_probs,
    check_surv,
    check_survival,
    check_times,
)
from bayesfuse.metrics.classification import _bin_ids
from bayesfuse.metrics.survival import DCalibration, _risk_groups

__all__ = [
    "class_probability_intervals",
    "confusion_matrix_plot",
    "d_calibration_histogram",
    "reliability_diagram",
    "risk_coverage_plot",
    "survival_calibration_plot",
]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def reliability_diagram(probs, y, n_bins: int = 15, ax=None):
    """Top-label reliability diagram: accuracy vs mean confidence in equal-width confidence bins.

    Bars show each non-empty bin's accuracy (width = bin width), red markers its mean confidence, the
    dashed diagonal perfect calibration; the legend gives the ECE (:func:`bayesfuse.metrics.ece`).

    Parameters
    ----------
    probs : array, shape (n, C)
    y : array of int, shape (n,)
    n_bins : int, default 15
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    p = check_probs(probs)
    yy = check_labels(y, p.shape[1], p.shape[0])
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == yy).astype(np.float64)
    ids = _bin_ids(conf, n_bins, "uniform")
    cnt = np.bincount(ids, minlength=n_bins)
    nz = cnt > 0
    acc = np.bincount(ids, weights=hit, minlength=n_bins)[nz] / cnt[nz]
    mconf = np.bincount(ids, weights=conf, minlength=n_bins)[nz] / cnt[nz]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ax = _axes(ax)
    ax.bar(edges[:-1][nz], acc, width=1.0 / n_bins, align="edge", edgecolor="black", alpha=0.7,
           label=f"accuracy (ECE = {ece(p, yy, n_bins=n_bins):.3f})")
    ax.plot(mconf, acc, "o", color="tab:red", label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max class probability)", ylabel="accuracy",
           title="Reliability diagram")
    ax.legend(loc="upper left")
    return ax


def risk_coverage_plot(confidence, correct, ax=None):
    """Selective risk vs coverage (most confident patients kept first); AURC in the legend.

    Parameters
    ----------
    confidence : array, shape (n,)
    correct : array of bool, shape (n,)
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    rc = risk_coverage_curve(confidence, correct)
    ax = _axes(ax)
    ax.step(np.r_[0.0, rc.coverage], np.r_[rc.risk[0], rc.risk], where="pre",
            label=f"model (AURC = {aurc(confidence, correct):.3f})")
    ax.axhline(rc.risk[-1], ls="--", color="gray", label="no abstention")
    ax.set(xlim=(0, 1), ylim=(0, max(1e-3, 1.05 * float(rc.risk.max()))), xlabel="coverage",
           ylabel="selective risk (error rate)", title="Risk-coverage curve")
    ax.legend()
    return ax


def survival_calibration_plot(time, event, surv, times, groups: int = 3, horizon: float | None = None,
                              ax=None):
    """Kaplan-Meier curve with confidence band per predicted-risk group + the group's mean predicted curve.

    Patients are split into ``groups`` equal-size groups by predicted risk ``1 - S(horizon)`` (tertiles
    by default); each group gets one colour: solid KM curve with its 95% band
    (``lifelines.KaplanMeierFitter``), dashed mean predicted survival.

    Parameters
    ----------
    time, event : array, shape (n,)
    surv : array, shape (n, T)
    times : array, shape (T,)
    groups : int, default 3
    horizon : float, optional
        Time at which risk groups are formed; defaults to the middle grid time.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    from lifelines import KaplanMeierFitter

    t, e = check_survival(time, event)
    grid = check_times(times)
    s = check_surv(surv, t.shape[0], grid.shape[0])
    h = float(grid[grid.shape[0] // 2]) if horizon is None else float(horizon)
    grp = _risk_groups(1.0 - surv_at(s, grid, h), groups)
    names = {3: ["low", "middle", "high"], 2: ["low", "high"]}.get(groups)
    ax = _axes(ax)
    for g in range(int(grp.max()) + 1):
        m = grp == g
        color = f"C{g % 10}"
        name = names[g] if names else f"group {g + 1}"
        kmf = KaplanMeierFitter(label=f"{name} risk: KM (n={int(m.sum())})").fit(t[m], e[m])
        kmf.plot_survival_function(ax=ax, ci_show=True, color=color)
        ax.step(np.r_[0.0, grid], np.r_[1.0, s[m].mean(axis=0)], where="post", ls="--", color=color,
                label=f"{name} risk: mean predicted")
    ax.axvline(h, color="gray", lw=0.8, ls=":")
    ax.set(ylim=(0, 1.02), xlabel="time", ylabel="survival probability",
           title="Predicted vs Kaplan-Meier survival by risk group")
    ax.legend(fontsize="small")
    return ax


def d_calibration_histogram(dcal: DCalibration, ax=None):
    """Histogram of a D-calibration record: share of patients per bin of ``S(T)`` vs the uniform line.

    Parameters
    ----------
    dcal : DCalibration
        From :func:`bayesfuse.metrics.d_calibration`.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    if not isinstance(dcal, DCalibration):
        raise DataError(f"dcal must be the record returned by bayesfuse.metrics.d_calibration, got "
                        f"{type(dcal).__name__}.")
    B = dcal.counts.shape[0]
    ax = _axes(ax)
    ax.bar(dcal.edges[:-1], dcal.counts / dcal.n, width=np.diff(dcal.edges), align="edge",
           edgecolor="black", alpha=0.7, label="observed share")
    ax.axhline(1.0 / B, ls="--", color="tab:red", label="uniform (calibrated)")
    ax.set(xlim=(0, 1), xlabel="predicted survival at own time, S(t)", ylabel="share of patients",
           title=f"D-calibration (chi2 = {dcal.statistic:.2f}, p = {dcal.p_value:.3g})")
    ax.legend()
    return ax


def class_probability_intervals(probs_draws, classes: Sequence, patient_labels: Sequence, prob: float = 0.9,
                                ax=None):
    """Posterior mean and central credible interval of each class probability, per patient.

    Patients run down the y axis; each class has a colour and a small vertical offset.

    Parameters
    ----------
    probs_draws : array, shape (S, n, C)
    classes : sequence, length C
    patient_labels : sequence, length n
    prob : float, default 0.9
        Mass of the central credible interval.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    d = check_prob_draws(probs_draws)
    S, n, C = d.shape
    if len(classes) != C:
        raise DataError(f"classes has {len(classes)} names but probs_draws has {C} classes (last axis).")
    if len(patient_labels) != n:
        raise DataError(f"patient_labels has {len(patient_labels)} entries but probs_draws has {n} patients "
                        "(axis 1).")
    if not 0 < prob < 1:
        raise DataError(f"prob must be in (0, 1), got {prob!r}.")
    mean = d.mean(axis=0)
    lo, hi = np.quantile(d, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    ax = _axes(ax)
    ypos = np.arange(n, dtype=np.float64)
    offsets = (np.arange(C) - (C - 1) / 2) * (0.7 / max(C, 1))
    for c in range(C):
        ax.errorbar(mean[:, c], ypos + offsets[c], xerr=np.vstack([mean[:, c] - lo[:, c], hi[:, c] - mean[:, c]]),
                    fmt="o", ms=4, capsize=2, color=f"C{c % 10}", label=str(classes[c]))
    ax.set_yticks(ypos, [str(lab) for lab in patient_labels])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel=f"class probability (mean, {int(round(prob * 100))}% credible interval)",
           title="Class probabilities per patient")
    ax.legend(title="class", fontsize="small")
    return ax


def confusion_matrix_plot(y_true, y_pred, classes: Sequence, normalize: str | None = None, ax=None):
    """Confusion matrix (``sklearn.metrics.ConfusionMatrixDisplay``), rows = true class.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (n,)
        Class codes in ``0..C-1``.
    classes : sequence, length C
    normalize : {None, "true", "pred", "all"}, default None
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    C = len(classes)
    yt = check_labels(y_true, C, len(np.asarray(y_true)), "y_true")
    yp = check_labels(y_pred, C, len(np.asarray(y_pred)), "y_pred")
    if yt.shape != yp.shape:
        raise DataError(f"lengths mismatched (y_true={yt.shape[0]}, y_pred={yp.shape[0]}); pass one "
                        "prediction per patient.")
    ax = _axes(ax)
    ConfusionMatrixDisplay.from_predictions(yt, yp, labels=np.arange(C), display_labels=list(classes),
                                            normalize=normalize, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix")
    return ax


