"""Device-resident tensors of a cohort and the minibatches cut from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Batch", "TensorStore"]


@dataclass
class Batch:
    """One minibatch (B patients). All tensors live on the model's device.

    Attributes
    ----------
    index : LongTensor (B,)
        Row of each patient in the full cohort (used for plate subsampling).
    encoder_input, observed, cell_mask : dict[str, Tensor (B, F_m)]
    library : dict[str, Tensor (B,)]
    presence : Tensor (M, B)
        1 where the patient has modality m (modalities in model order).
    targets : dict[str, dict[str, Tensor (B,)]]
        Per head, encoded targets (categorical: ``y`` long with -1 = unknown).
    """

    index: torch.Tensor
    encoder_input: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    cell_mask: dict[str, torch.Tensor]
    library: dict[str, torch.Tensor]
    presence: torch.Tensor
    targets: dict[str, dict[str, torch.Tensor]]

    @property
    def size(self) -> int:
        return int(self.index.shape[0])


@dataclass
class TensorStore:
    """Whole-cohort tensors (absent modality rows are zeros with presence 0)."""

    encoder_input: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    cell_mask: dict[str, torch.Tensor]
    library: dict[str, torch.Tensor]
    presence: torch.Tensor
    targets: dict[str, dict[str, torch.Tensor]]

    @property
    def n(self) -> int:
        return int(self.presence.shape[1])

    def batch(self, index: torch.Tensor) -> Batch:
        """Rows ``index`` (LongTensor on the store's device) as a :class:`Batch`."""
        sel = lambda d: {k: v.index_select(0, index) for k, v in d.items()}  # noqa: E731
        return Batch(index=index, encoder_input=sel(self.encoder_input), observed=sel(self.observed),
                     cell_mask=sel(self.cell_mask), library=sel(self.library),
                     presence=self.presence.index_select(1, index),
                     targets={h: sel(t) for h, t in self.targets.items()})

    def full(self) -> Batch:
        return Batch(index=torch.arange(self.n, device=self.presence.device), encoder_input=self.encoder_input,
                     observed=self.observed, cell_mask=self.cell_mask, library=self.library,
                     presence=self.presence, targets=self.targets)
