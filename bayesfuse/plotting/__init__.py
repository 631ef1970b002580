"""Evaluation plots on numpy arrays (matplotlib; no torch). Each function takes ``ax=None`` and returns ``ax``."""

from __future__ import annotations

from bayesfuse.plotting._plots import (
    class_probability_intervals,
    confusion_matrix_plot,
    d_calibration_histogram,
    reliability_diagram,
    risk_coverage_plot,
    survival_calibration_plot,
)

__all__ = [
    "class_probability_intervals",
    "confusion_matrix_plot",
    "d_calibration_histogram",
    "reliability_diagram",
    "risk_coverage_plot",
    "survival_calibration_plot",
]
