"""Evaluation on top of posteriors: aligned metric tables, the demo, reports."""

from bayesfuse.evaluation.classification import evaluate_classification

__all__ = ["evaluate_classification"]
