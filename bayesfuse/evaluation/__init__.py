"""Evaluation on top of posteriors: aligned metric tables, the demo, reports."""

from bayesfuse.evaluation.classification import evaluate_classification
from bayesfuse.evaluation.report import Report, build_report

__all__ = ["Report", "build_report", "evaluate_classification"]
