"""bayesfuse: Bayesian multimodal fusion for cancer data.

Public API (the contract evaluation scripts rely on)::

    import bayesfuse as bf
    data = bf.MultiModalData.read_dir("../shared/data/tcga_gbmlgg")
    model = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"})
    model.fit(seed=0)
    post = model.predict(data.subset(split="test"), num_samples=200)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# Lazy re-exports: ``import bayesfuse`` stays cheap (no torch/pyro import until needed).
_LAZY = {
    "MultiModalData": "bayesfuse.data",
    "FusionModel": "bayesfuse.model",
    "AdvancedConfig": "bayesfuse.model.advanced",
    "DeepEnsemble": "bayesfuse.model.ensemble",
    "Posterior": "bayesfuse.posterior",
    "Imputation": "bayesfuse.posterior",
    "Abstainer": "bayesfuse.calibration",
    "ConformalSets": "bayesfuse.calibration",
    "SurvivalBound": "bayesfuse.calibration",
    "heads": "bayesfuse.heads",
    "datasets": "bayesfuse.datasets",
    "metrics": "bayesfuse.metrics",
    "plotting": "bayesfuse.plotting",
    "calibration": "bayesfuse.calibration",
    "diagnostics": "bayesfuse.diagnostics",
    "evaluation": "bayesfuse.evaluation",
    "exceptions": "bayesfuse.exceptions",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        value = mod if _LAZY[name].endswith("." + name) else getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayesfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
