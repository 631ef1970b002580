"""Tests of bayesfuse.plotting: each plot returns its Axes with the expected artists and saves to PNG."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from bayesfuse.exceptions import DataError  # noqa: E402
from bayesfuse.metrics import d_calibration, ece  # noqa: E402
from bayesfuse.plotting import (  # noqa: E402
    class_probability_intervals,
    confusion_matrix_plot,
    d_calibration_histogram,
    reliability_diagram,
    risk_coverage_plot,
    survival_calibration_plot,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def png_bytes(ax) -> bytes:
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=50)
    return buf.getvalue()


def assert_png(ax):
    data = png_bytes(ax)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.fixture(scope="module")
def cls():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(200, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    return p, y


@pytest.fixture(scope="module")
def surv_data():
    rng = np.random.default_rng(1)
    rate = np.exp(rng.normal(size=150))
    t_ev = rng.exponential(1 / rate)
    t_c = rng.exponential(2.0, size=150)
    t, e = np.minimum(t_ev, t_c), t_ev <= t_c
    times = np.linspace(0.05, 2.0, 30)
    return t, e, np.exp(-np.outer(rate, times)), times


def test_reliability_diagram(cls):
    p, y = cls
    ax = reliability_diagram(p, y, n_bins=10)
    assert isinstance(ax, Axes)
    conf = p.max(1)
    n_nonempty = np.count_nonzero(np.histogram(conf, bins=np.linspace(0, 1, 11))[0])
    assert len(ax.patches) == n_nonempty
    assert len(ax.lines) == 2  # mean-confidence markers + diagonal
    legend = " | ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"ECE = {ece(p, y, n_bins=10):.3f}" in legend
    assert_png(ax)


def test_plots_draw_into_given_axes(cls):
    p, y = cls
    fig, axes = plt.subplots(1, 2)
    assert reliability_diagram(p, y, ax=axes[1]) is axes[1]
    assert risk_coverage_plot(p.max(1), p.argmax(1) == y, ax=axes[0]) is axes[0]
    assert len(fig.axes) == 2


def test_risk_coverage_plot(cls):
    p, y = cls
    ax = risk_coverage_plot(p.max(1), p.argmax(1) == y)
    curve = ax.lines[0]
    x, r = curve.get_data()
    assert x[-1] == 1.0 and abs(r[-1] - np.mean(p.argmax(1) != y)) < 1e-12
    assert len(ax.lines) == 2 and "AURC" in ax.get_legend().get_texts()[0].get_text()
    assert_png(ax)


def test_survival_calibration_plot(surv_data):
    t, e, surv, times = surv_data
    ax = survival_calibration_plot(t, e, surv, times, groups=3)
    km_lines = [ln for ln in ax.lines if "KM" in ln.get_label()]
    pred_lines = [ln for ln in ax.lines if "predicted" in ln.get_label()]
    assert len(km_lines) == 3 and len(pred_lines) == 3
    for km, pr in zip(km_lines, pred_lines):
        assert mcolors.same_color(km.get_color(), pr.get_color())
        assert pr.get_linestyle() == "--"
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3  # CI bands
    # the high-risk group's mean predicted curve lies below the low-risk one
    assert pred_lines[2].get_ydata()[-1] < pred_lines[0].get_ydata()[-1]
    assert_png(ax)


def test_d_calibration_histogram():
    rng = np.random.default_rng(2)
    rec = d_calibration(rng.uniform(size=300), rng.uniform(size=300) < 0.7, n_bins=10)
    ax = d_calibration_histogram(rec)
    heights = [patch.get_height() for patch in ax.patches]
    np.testing.assert_allclose(heights, rec.counts / rec.n)
    assert len(ax.lines) == 1 and abs(ax.lines[0].get_ydata()[0] - 0.1) < 1e-12
    assert f"{rec.p_value:.3g}" in ax.get_title()
    assert_png(ax)
    with pytest.raises(DataError, match="d_calibration"):
        d_calibration_histogram({"counts": [1, 2]})


def test_class_probability_intervals():
    rng = np.random.default_rng(3)
    draws = rng.dirichlet([4.0, 2.0, 1.0], size=(100, 5))  # (S, n, C)
    ax = class_probability_intervals(draws, ["A", "B", "C"], [f"pt{i}" for i in range(5)], prob=0.9)
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 3
    xs = containers[0].lines[0].get_xdata()
    np.testing.assert_allclose(xs, draws.mean(0)[:, 0])
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"pt{i}" for i in range(5)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B", "C"]
    assert_png(ax)
    with pytest.raises(DataError, match="patient_labels"):
        class_probability_intervals(draws, ["A", "B", "C"], ["x"])


def test_confusion_matrix_plot(cls):
    p, y = cls
    pred = p.argmax(1)
    ax = confusion_matrix_plot(y, pred, ["a", "b", "c"])
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion_matrix(y, pred))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert len(ax.texts) == 9
    assert_png(ax)
    with pytest.raises(DataError, match="outside 0..2"):
        confusion_matrix_plot(y, pred + 1, ["a", "b", "c"])
