"""Calibrated "I don't know": abstention with a Learn-then-Test guarantee (categorical heads,
survival calls at a horizon, several heads jointly), conformal prediction sets, conformalised
survival lower bounds, temperature scaling and patient-level splits. numpy / scipy only."""

from bayesfuse.calibration._common import CalibrationWarning, mutual_information, subset_posterior
from bayesfuse.calibration.abstain import ABSTAIN, Abstainer, RiskCoverage, clopper_pearson
from bayesfuse.calibration.censoring import KaplanMeierCensoring, ipcw_weights, select_at_risk
from bayesfuse.calibration.conformal import ConformalSets, class_coverage, coverage, to_indicator
from bayesfuse.calibration.ltt import (
    LTTResult,
    MultiLTTResult,
    binomial_p_values,
    default_grid,
    effective_starts,
    ltt_fixed_sequence,
    ltt_multi_risk,
    min_certifiable,
)
from bayesfuse.calibration.splits import make_splits
from bayesfuse.calibration.survival_abstain import SurvivalRiskCoverage
from bayesfuse.calibration.survival_bound import BoundCoverage, SurvivalBound, conformal_lower_level
from bayesfuse.calibration.temperature import TemperatureScaler

__all__ = [
    "ABSTAIN",
    "Abstainer",
    "BoundCoverage",
    "CalibrationWarning",
    "ConformalSets",
    "KaplanMeierCensoring",
    "LTTResult",
    "MultiLTTResult",
    "RiskCoverage",
    "SurvivalBound",
    "SurvivalRiskCoverage",
    "TemperatureScaler",
    "binomial_p_values",
    "class_coverage",
    "clopper_pearson",
    "conformal_lower_level",
    "coverage",
    "default_grid",
    "effective_starts",
    "ipcw_weights",
    "ltt_fixed_sequence",
    "ltt_multi_risk",
    "make_splits",
    "min_certifiable",
    "mutual_information",
    "select_at_risk",
    "subset_posterior",
    "to_indicator",
]
