"""argparse value types shared by the two command lines (``bayesfuse`` and ``python -m bayesfuse.model.distributed``)."""

from __future__ import annotations

import argparse

__all__ = ["latent_dim_arg"]


def latent_dim_arg(text: str) -> str | int:
    """``--latent-dim``: ``auto`` (the model's rule, :func:`bayesfuse.model.fusion_model.auto_latent_dim`) or an
    integer >= 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or an integer >= 1")
    return value
