"""Build the torch head module of a fitted head spec (categorical or survival).

Kept apart from ``module/heads.py`` (the ``HeadModule`` base class) because it needs every head
module, and ``module/survival_head.py`` subclasses ``HeadModule``.
"""

from __future__ import annotations

from bayesfuse.heads import Categorical, Head
from bayesfuse.module.heads import CategoricalHeadModule, HeadModule
from bayesfuse.module.survival_head import SurvivalHeadModule

__all__ = ["build_head_module"]


def build_head_module(spec: Head, latent_dim: int) -> HeadModule:
    """Build the torch module for a fitted head spec (classes / time grid already set)."""
    if isinstance(spec, Categorical):
        if not spec.classes:
            raise ValueError("Categorical head has no classes; fit the model on labelled data first.")
        return CategoricalHeadModule(latent_dim, len(spec.classes), hidden=spec.hidden, weight=spec.weight)
    return SurvivalHeadModule.from_spec(spec, latent_dim)
