"""Device, dtype and seeding helpers shared by every layer."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA when :func:`torch.cuda.is_available` and the CPU otherwise.
    Asking for CUDA on a machine without it is an error, not a silent CPU fallback.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but torch sees no CUDA device "
            f"(torch {torch.__version__}). Use device='cpu' or device='auto'."
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Map ``"float32"``/``"float64"`` (or a torch dtype) to a torch floating dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {"float32": torch.float32, "float64": torch.float64, "double": torch.float64,
               "float": torch.float32}.get(str(dtype))
        if out is None:
            raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'.")
    if out not in (torch.float32, torch.float64):
        raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'.")
    return out


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.float64: "float64"}[dtype]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy, torch and pyro; return a CPU generator for data shuffling."""
    import pyro

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
