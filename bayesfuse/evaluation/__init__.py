"""Evaluation on top of posteriors: aligned metric tables, the demo, reports, hide-and-impute protocols."""

from bayesfuse.evaluation.classification import evaluate_classification
from bayesfuse.evaluation.imputation import ImputationEvaluation, evaluate_imputation

__all__ = ["ImputationEvaluation", "evaluate_classification", "evaluate_imputation"]
