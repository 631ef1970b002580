"""Built-in cohorts: a simulator drawn from the model family, with ground truth."""

from bayesfuse.datasets.simulate import SimulationTruth, simulate

__all__ = ["simulate", "SimulationTruth"]
