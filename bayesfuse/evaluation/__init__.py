"""Reusable evaluation protocols (hide data, predict it, score it)."""

from bayesfuse.evaluation.imputation import ImputationEvaluation, evaluate_imputation

__all__ = ["ImputationEvaluation", "evaluate_imputation"]
