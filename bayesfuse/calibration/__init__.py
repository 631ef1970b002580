"""Calibrated "I don't know": abstention with a Learn-then-Test guarantee, conformal
prediction sets, temperature scaling and patient-level splits. numpy / scipy only."""

from bayesfuse.calibration._common import CalibrationWarning, mutual_information, subset_posterior
from bayesfuse.calibration.abstain import ABSTAIN, Abstainer, RiskCoverage, clopper_pearson
from bayesfuse.calibration.conformal import ConformalSets, class_coverage, coverage, to_indicator
from bayesfuse.calibration.ltt import (
    LTTResult,
    binomial_p_values,
    default_grid,
    ltt_fixed_sequence,
    min_certifiable,
)
from bayesfuse.calibration.splits import make_splits
from bayesfuse.calibration.temperature import TemperatureScaler

__all__ = [
    "ABSTAIN",
    "Abstainer",
    "CalibrationWarning",
    "ConformalSets",
    "LTTResult",
    "RiskCoverage",
    "TemperatureScaler",
    "binomial_p_values",
    "class_coverage",
    "clopper_pearson",
    "coverage",
    "default_grid",
    "ltt_fixed_sequence",
    "make_splits",
    "min_certifiable",
    "mutual_information",
    "subset_posterior",
    "to_indicator",
]
