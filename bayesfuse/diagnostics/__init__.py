"""Diagnostics of variational inference: PSIS k-hat, NUTS reference for the heads, SBC."""

from bayesfuse.diagnostics.vi import (
    HeadKhat,
    VIDiagnostics,
    head_weight_diagnostics,
    khat_threshold,
    psis_khat,
)

__all__ = ["HeadKhat", "VIDiagnostics", "head_weight_diagnostics", "khat_threshold", "psis_khat"]
