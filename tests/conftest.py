"""Shared fixtures: one torch thread, seeded RNGs, path to the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("BAYESFUSE_SHARED_DATA",
                                  Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _seed_everything():
    import random

    import pyro

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test cleanly when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA}")
    return SHARED_DATA


def dataset_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name!r} not found at {path}")
    return path
