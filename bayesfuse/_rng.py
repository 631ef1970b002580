"""One process-wide lock around the seeded, forked global RNG used by predict / impute / scoring.

``FusionModel.predict`` seeds torch's *global* generator inside ``torch.random.fork_rng`` (so the
caller's RNG state is untouched). Two threads doing that at once interleave their draws on the
shared generator; :func:`seeded_rng` serialises those sections, so concurrent calls give exactly
the draws of serial calls (``tests/test_reliability_concurrency.py``). Only the draw sections
hold the lock; the caller's own use of the global RNG in other threads is not covered.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["RNG_LOCK", "seeded_rng"]

RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_rng(seed: int, devices: list) -> Iterator[None]:
    """``with seeded_rng(seed, devices):`` torch's global RNG seeded with ``seed``, forked and locked."""
    with RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
