"""Atomic training checkpoints (safetensors + JSON, no pickle) and resuming from them.

A checkpoint is a folder ``<checkpoint_dir>/epoch-<NNNNNN>/`` with

* ``state.safetensors``: the module's parameters, the optimizer's per-parameter state
  (``exp_avg``, ``exp_avg_sq``, ``step``), the best-so-far parameters, and every RNG state as
  a uint8 tensor (torch CPU, the shuffling generator, CUDA when present, numpy, python);
* ``state.json``: the loop state (epoch, best epoch and loss, stalled epochs, learning rate,
  retries, history rows), the optimizer's hyperparameters and a fingerprint of the training
  settings and parameter shapes, so resuming into a different model is refused.

It is written into a hidden temporary folder and renamed into place (a rename within one
filesystem is atomic), so a crash mid-write leaves the previous checkpoint as the latest
complete one. Resuming restores everything above, so the continued run is bit-identical to an
uninterrupted one on the CPU (``tests/test_reliability_training.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bayesfuse._atomic import make_temp_dir
from bayesfuse.exceptions import ModelFormatError

__all__ = ["CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "rng_state",
           "restore_rng"]

CHECKPOINT_VERSION = 1
STATE_JSON, STATE_TENSORS, PREFIX = "state.json", "state.safetensors", "epoch-"
KEEP = 2   # most recent complete checkpoints kept


def rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG the fit draws from: tensors (torch, generator, CUDA) and JSON (numpy, python)."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict, generator: torch.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))


def fingerprint(module: torch.nn.Module, settings: dict) -> str:
    """Hash of the parameter names / shapes / dtypes and the training settings."""
    shapes = [[k, list(v.shape), str(v.dtype)] for k, v in module.state_dict().items()]
    blob = json.dumps({"shapes": shapes, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _optim_tensors(module: torch.nn.Module, optim: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in module.named_parameters()}
    out = {}
    for p, st in optim.state.items():
        for k, v in st.items():
            if torch.is_tensor(v):
                out[f"optim.{names[id(p)]}.{k}"] = v.detach().cpu().contiguous()
    return out


def save_checkpoint(directory: str | Path, epoch: int, module: torch.nn.Module, optim: torch.optim.Optimizer,
                    generator: torch.Generator, loop: dict, best_state: dict | None, settings: dict) -> Path:
    """Write the checkpoint of the end of ``epoch`` atomically; return its folder.

    ``loop`` holds the JSON-able loop state; ``best_state`` the best-so-far ``state_dict``
    (or None). Older checkpoints beyond the :data:`KEEP` most recent are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tensors.update(_optim_tensors(module, optim))
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    rng_t, rng_meta = rng_state(generator)
    tensors.update(rng_t)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optim.param_groups]
    meta = {"checkpoint_version": CHECKPOINT_VERSION, "epoch": int(epoch), "loop": loop, "rng": rng_meta,
            "param_groups": groups, "has_best": best_state is not None,
            "fingerprint": fingerprint(module, settings)}
    final = directory / f"{PREFIX}{epoch:06d}"
    tmp = make_temp_dir(directory, final.name)
    try:
        save_file(tensors, str(tmp / STATE_TENSORS), metadata={"format": "bayesfuse-checkpoint"})
        (tmp / STATE_JSON).write_text(json.dumps(meta, default=_json_default))
        for f in (STATE_TENSORS, STATE_JSON):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(directory.glob(f"{PREFIX}*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if torch.is_tensor(v):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def latest_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``path`` names: itself, or the most recent complete one inside it."""
    path = Path(path)
    if (path / STATE_JSON).is_file() and (path / STATE_TENSORS).is_file():
        return path
    found = sorted(p for p in path.glob(f"{PREFIX}*") if (p / STATE_JSON).is_file() and (p / STATE_TENSORS).is_file()) \
        if path.is_dir() else []
    if not found:
        raise ModelFormatError(f"resume={str(path)!r} holds no bayesfuse checkpoint (expected a folder written by "
                               "fit(checkpoint_dir=...), or one of its epoch-NNNNNN folders); check the path.")
    return found[-1]


def load_checkpoint(path: str | Path, module: torch.nn.Module, optim: torch.optim.Optimizer,
                    generator: torch.Generator, settings: dict, restore_rngs: bool = True) -> dict:
    """Restore module, optimizer and RNGs from the checkpoint at ``path``; return its JSON state.

    The returned dict has ``epoch``, ``loop`` and ``best_state`` (a ``state_dict`` or None).
    A checkpoint of another model or other training settings is a :class:`ModelFormatError`.
    """
    folder = latest_checkpoint(path)
    try:
        meta = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
    except (ValueError, UnicodeDecodeError, OSError, SafetensorError) as exc:
        raise ModelFormatError(f"checkpoint {folder} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); "
                               "resume from an earlier epoch-NNNNNN folder or refit.") from exc
    if not isinstance(meta, dict) or meta.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise ModelFormatError(f"checkpoint {folder} has version {meta.get('checkpoint_version')!r}; this "
                               f"bayesfuse reads version {CHECKPOINT_VERSION}. Resume with the version that wrote it.")
    if meta.get("fingerprint") != fingerprint(module, settings):
        raise ModelFormatError(f"checkpoint {folder} was written by a fit with other settings or another model "
                               "(parameter shapes or training arguments differ); call fit(resume=...) on a model "
                               "built like the interrupted one, with the same fit arguments.")
    module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
    params = dict(module.named_parameters())
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            pname, skey = k[len("optim."):].rsplit(".", 1)
            p = params[pname]
            on_device = skey != "step" or optim.defaults.get("fused") or optim.defaults.get("capturable")
            state.setdefault(p, {})[skey] = v.to(p.device) if on_device else v
    for p, st in state.items():
        optim.state[p] = st
    for g, saved in zip(optim.param_groups, meta["param_groups"]):
        for k, v in saved.items():
            g[k] = tuple(v) if isinstance(g.get(k), tuple) else v
    if restore_rngs:
        restore_rng(tensors, meta["rng"], generator)
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
    return {"epoch": int(meta["epoch"]), "loop": meta["loop"], "best_state": best}
