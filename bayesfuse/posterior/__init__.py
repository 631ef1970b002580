"""Posterior containers: plain numpy arrays plus names (no torch)."""

from bayesfuse.posterior.imputation import Imputation
from bayesfuse.posterior.ood import LatentMahalanobis
from bayesfuse.posterior.posterior import Posterior

__all__ = ["Imputation", "LatentMahalanobis", "Posterior"]
