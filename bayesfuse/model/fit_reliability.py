"""``FusionModel.fit``'s checkpoint / resume / fault-retry arguments -> the options of ``train_svi``."""

from __future__ import annotations

from bayesfuse.exceptions import ArgumentError
from bayesfuse.train.faults import FaultPolicy
from bayesfuse.train.svi import Checkpointing, TrainConfig

__all__ = ["fit_reliability_options"]


def fit_reliability_options(config: TrainConfig, seed, validation_fraction, train_ids, val_ids, checkpoint_dir,
                            checkpoint_every, resume, max_retries) -> tuple[Checkpointing, FaultPolicy]:
    """``(Checkpointing, FaultPolicy)`` of :func:`~bayesfuse.train.svi.train_svi` from ``fit``'s arguments.

    The checkpoint fingerprint covers every training setting (except ``progress``), the seed and
    the exact training / validation patients, so ``fit(resume=...)`` continues only the same fit.
    """
    if int(checkpoint_every) < 0 or (int(checkpoint_every) > 0 and checkpoint_dir is None):
        raise ArgumentError(f"checkpoint_every={checkpoint_every} must be >= 0, and > 0 needs checkpoint_dir= "
                            "(the folder to write checkpoints to).")
    if int(max_retries) < 0:
        raise ArgumentError(f"max_retries={max_retries} must be >= 0.")
    settings = {**{k: v for k, v in config.__dict__.items() if k != "progress"}, "seed": int(seed),
                "validation_fraction": float(validation_fraction),
                "train_ids": [str(i) for i in train_ids], "validation_ids": [str(i) for i in val_ids]}
    ckpt = Checkpointing(directory=None if checkpoint_dir is None else str(checkpoint_dir),
                         every=int(checkpoint_every), resume=None if resume is None else str(resume),
                         settings=settings)
    return ckpt, FaultPolicy(max_retries=int(max_retries))
