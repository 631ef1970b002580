"""Saving and loading :class:`FusionModel` without pickle.

A model directory holds

* ``config.json``: format version, hyperparameters, per-modality preprocessing metadata
  (feature names, likelihood), head specifications (class labels, time grids), training
  settings and history;
* ``weights.safetensors``: the module's parameters and the preprocessing arrays.

Loading reads JSON and tensors only (``safetensors`` never executes code).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bayesfuse._atomic import check_output_dir, make_temp_dir, replace_dir
from bayesfuse._labels import label_text
from bayesfuse._settings import dtype_name, resolve_device, resolve_dtype
from bayesfuse.data.preprocessing import ModalityTransform
from bayesfuse.exceptions import ModelFormatError
from bayesfuse.heads import head_from_config

FORMAT_VERSION = 3
# Version 3 added the categorical heads' calibration map ("class_calibration"), applied by
# predict; version 2 added the optional imputation recalibration ("imputation_calibration" + slope
# arrays). Versions 1 and 2 load unchanged (no calibration map; integer class labels become text).
READABLE_VERSIONS = (1, 2, 3)
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"

__all__ = ["FORMAT_VERSION", "save_model", "load_model", "model_to_bytes", "model_from_bytes"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def save_model(model, path: Path, overwrite: bool = False) -> Path:
    """Write the model to ``path`` atomically: into a hidden temporary folder next to it, then renamed.

    A crash (or kill) mid-save leaves at most a ``.tmp-*`` folder, never a loadable half model
    at ``path``; with ``overwrite=True`` the old model is replaced only once the new one is complete.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, path.name)
    try:
        _write_model(model, tmp)
        for f in (WEIGHTS, CONFIG):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_model(model, path: Path) -> None:
    tensors, config = _serialise(model)
    save_file(tensors, str(path / WEIGHTS), metadata={"format": "bayesfuse", "format_version": str(FORMAT_VERSION)})
    (path / CONFIG).write_text(json.dumps(_jsonable(config), indent=1))


def model_to_bytes(model) -> dict[str, Any]:
    """The save format in memory: ``{"config": JSON text, "weights": safetensors bytes}`` (no pickle)."""
    from safetensors.torch import save  # noqa: PLC0415

    tensors, config = _serialise(model)
    return {"format": "bayesfuse", "config": json.dumps(_jsonable(config)),
            "weights": save(tensors, metadata={"format": "bayesfuse", "format_version": str(FORMAT_VERSION)})}


def model_from_bytes(cls, blob: dict[str, Any], device: str = "cpu"):
    """Inverse of :func:`model_to_bytes` (reads JSON and tensors only; executes no code)."""
    from safetensors.torch import load  # noqa: PLC0415

    if not isinstance(blob, dict) or blob.get("format") != "bayesfuse":
        raise ModelFormatError("Not an in-memory bayesfuse model (expected the dict written by model_to_bytes).")
    try:
        config = json.loads(blob["config"])
        tensors = load(bytes(blob["weights"]))
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise ModelFormatError(f"The in-memory model is corrupted ({type(exc).__name__}: {str(exc)[:200]}).") from exc
    if config.get("format_version") not in READABLE_VERSIONS:
        raise ModelFormatError(f"In-memory model format version {config.get('format_version')}; this bayesfuse reads "
                               f"{READABLE_VERSIONS}.")
    return _build_loaded(cls, None, config, resolve_device(device), tensors=tensors)


def _serialise(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON-able configuration of a fitted model (shared by the file and in-memory formats)."""
    import bayesfuse

    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    for m, tf in model.transforms.items():
        for k, arr in tf.arrays().items():
            tensors[f"transform.{m}.{k}"] = torch.as_tensor(np.ascontiguousarray(arr))
    recal = getattr(model, "imputation_calibration_", None) or {}
    for m, rec in recal.items():
        tensors[f"imputation_calibration.{m}.slope"] = torch.as_tensor(np.ascontiguousarray(rec.slope,
                                                                                            dtype=np.float64))
    config = {
        "format_version": FORMAT_VERSION,
        "bayesfuse_version": bayesfuse.__version__,
        "model": {"latent_dim": model.latent_dim, "hidden": model.hidden, "encoder_dropout": model.encoder_dropout,
                  "dtype": dtype_name(model.dtype), "bayesian": getattr(model, "bayesian", "none"),
                  "prior_scale": getattr(model, "prior_scale", 1.0), "head_guide": getattr(model, "head_guide", "fullrank"),
                  "guide_rank": getattr(model, "guide_rank", 4),
                  "encoder_layers": getattr(model, "encoder_layers", "all"),
                  "head_refit_steps": getattr(model, "head_refit_steps", 0),
                  "survival_refit": getattr(model, "survival_refit", "none")},
        "modalities": [tf.config() for tf in model.transforms.values()],
        "heads": {k: spec.to_config() for k, spec in model.heads.items()},
        "train_config": model.train_config_,
        "fit": {"best_epoch": getattr(model, "best_epoch_", None), "fit_seconds": getattr(model, "fit_seconds_", None),
                "stopped_early": getattr(model, "stopped_early_", None),
                "interrupted": bool(getattr(model, "interrupted_", False)),
                "faults": getattr(model, "fit_faults_", [])},
        "history": model.history_.to_dict(orient="list") if model.history_ is not None else None,
        "imputation_calibration": {m: rec.to_config() for m, rec in recal.items()},
        "class_calibration": {h: c.to_config() for h, c in (getattr(model, "class_calibration_", None) or {}).items()},
    }
    return tensors, config


def load_model(cls, path: Path, device: str = "auto"):
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise ModelFormatError(f"{path} is not a saved bayesfuse model: it {what}, and a saved model is a folder "
                               f"with {CONFIG} and {WEIGHTS} (written by model.save(path)). Check the path.")
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise ModelFormatError(f"{path} is not a saved bayesfuse model (needs {CONFIG} and {WEIGHTS}); "
                               "save one with model.save(path).")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
        raise ModelFormatError(f"{path / CONFIG} is not a readable model configuration ({exc}); the saved model "
                               "is corrupted: save it again from the fitted model.") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path / CONFIG} is not a readable model configuration (not a JSON object); "
                               "the saved model is corrupted: save it again from the fitted model.")
    version = config.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelFormatError(f"{path} was saved by a newer bayesfuse ({config.get('bayesfuse_version')}, model "
                               f"format version {version}); this bayesfuse reads versions {READABLE_VERSIONS}. "
                               "Upgrade bayesfuse (pip install -U bayesfuse) to load it.")
    if version not in READABLE_VERSIONS:
        raise ModelFormatError(f"{path} has model format version {version}; this bayesfuse reads versions "
                               f"{READABLE_VERSIONS}. Load it with the bayesfuse version that saved it "
                               f"({config.get('bayesfuse_version')}) and refit or re-save.")
    device = resolve_device(device)   # a bad device is the caller's error, not a corrupted file
    try:
        return _build_loaded(cls, path, config, device)
    except (ModelFormatError, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as exc:
        # a truncated weights file (SafetensorError), weights of another model (size mismatch),
        # a config with missing or mistyped entries: one clear error instead of a library traceback
        raise ModelFormatError(f"{path} could not be loaded: the saved model is corrupted or incomplete "
                               f"({type(exc).__name__}: {str(exc)[:300]}). Save it again from the fitted "
                               "model.") from exc


def _build_loaded(cls, path: Path | None, config: dict, device, tensors: dict[str, torch.Tensor] | None = None):
    """The model of ``config`` and ``weights.safetensors`` (the version was checked by :func:`load_model`)."""
    if tensors is None:
        tensors = load_file(str(path / WEIGHTS))
    model = cls.__new__(cls)
    mcfg = config["model"]
    model.latent_dim = int(mcfg["latent_dim"])
    model.hidden = int(mcfg["hidden"])
    model.encoder_dropout = float(mcfg["encoder_dropout"])
    model.device = resolve_device(device)
    model.dtype = resolve_dtype(mcfg["dtype"])
    # files written before weight uncertainty existed are point-estimate models
    model._set_bayesian(mcfg.get("bayesian", "none"), mcfg.get("prior_scale", 1.0), mcfg.get("head_guide", "fullrank"),
                        mcfg.get("guide_rank", 4), mcfg.get("encoder_layers", "all"),
                        mcfg.get("head_refit_steps", 0))
    model._set_survival_refit(mcfg.get("survival_refit", "none"))   # files before the option: no refit
    model.diagnostics_ = None
    model.transforms = {}
    for tcfg in config["modalities"]:
        m = tcfg["name"]
        arrays = {k.split(".", 2)[2]: tensors[k].numpy() for k in tensors if k.startswith(f"transform.{m}.")}
        model.transforms[m] = ModalityTransform.from_saved(tcfg, arrays)
    model.heads = {k: head_from_config(v) for k, v in config["heads"].items()}
    for spec in model.heads.values():   # files before version 3 kept integer labels as integers
        if getattr(spec, "classes", None) is not None:
            spec.classes = [label_text(c) for c in spec.classes]
    model._train_data = None
    model.train_config_ = config.get("train_config")
    fit = config.get("fit") or {}
    model.best_epoch_, model.fit_seconds_, model.stopped_early_ = (fit.get("best_epoch"), fit.get("fit_seconds"),
                                                                    fit.get("stopped_early"))
    model.interrupted_, model.fit_faults_ = bool(fit.get("interrupted", False)), list(fit.get("faults") or [])
    hist = config.get("history")
    model.history_ = pd.DataFrame(hist) if hist is not None else None
    model.module = model._build_module()
    state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
    missing, unexpected = model.module.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "reliability"]   # saved before reliability existed: all ones
    if missing or unexpected:
        raise ModelFormatError(f"Saved weights do not match the model configuration (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}); the directory may be corrupted.")
    model.module.eval()
    from bayesfuse.posterior.class_calibration import ClassCalibration  # noqa: PLC0415
    from bayesfuse.posterior.imputation_calibration import ImputationRecalibration  # noqa: PLC0415

    model.class_calibration_ = {h: ClassCalibration.from_config(c)
                                for h, c in (config.get("class_calibration") or {}).items()}
    model.imputation_calibration_ = {
        m: ImputationRecalibration.from_config(c, tensors[f"imputation_calibration.{m}.slope"].numpy())
        for m, c in (config.get("imputation_calibration") or {}).items()}
    return model
