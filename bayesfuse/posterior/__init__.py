"""Posterior containers: plain numpy arrays plus names (no torch)."""

from bayesfuse.posterior.imputation import Imputation
from bayesfuse.posterior.imputation_calibration import ImputationRecalibration
from bayesfuse.posterior.latent import Latent
from bayesfuse.posterior.ood import JointScore, LatentMahalanobis, PatientScores
from bayesfuse.posterior.posterior import Posterior

__all__ = ["Imputation", "ImputationRecalibration", "JointScore", "Latent", "LatentMahalanobis", "PatientScores", "Posterior"]
