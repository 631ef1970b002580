"""Evaluation on top of posteriors: aligned metric tables, the demo, reports, hide-and-impute protocols."""

from bayesfuse.evaluation.classification import evaluate_classification
from bayesfuse.evaluation.imputation import ImputationEvaluation, evaluate_imputation
from bayesfuse.evaluation.report import Report, build_report
from bayesfuse.evaluation.survival_selection import SurvivalSelection, select_survival_head
from bayesfuse.evaluation.tuning import HeadWeightSelection, select_head_weight

__all__ = ["HeadWeightSelection", "ImputationEvaluation", "Report", "SurvivalSelection", "build_report", "evaluate_classification",
           "evaluate_imputation", "select_head_weight", "select_survival_head"]
