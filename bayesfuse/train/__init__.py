"""Stochastic variational inference loop (KL warm-up, early stopping, history)."""

from bayesfuse.train.svi import TrainConfig, TrainResult, elbo_loss, train_svi

__all__ = ["TrainConfig", "TrainResult", "train_svi", "elbo_loss"]
