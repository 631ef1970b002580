"""SVI runner for :class:`bayesfuse.module.FusionModule`.

The loss is the ELBO of the module's Pyro model and guide. By default (``elbo="fused"``) it
is evaluated by :func:`bayesfuse.module.fused_elbo.fused_elbo_loss`, one vectorised torch
computation of the same estimator as Pyro's ``Trace_ELBO`` (equal at equal parameters and
noise, ``tests/test_perf.py``); ``elbo="trace"`` uses ``Trace_ELBO.differentiable_loss``
itself. A torch optimizer runs over the module's own parameters (no global param store).

Hot path: data stay on the device, minibatches are index_select'ed from device tensors,
Adam and gradient clipping are the fused / foreach kernels (one call over all parameters),
and the loss is read back to the host once per epoch (no per-step ``.item()``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyro
import torch
from pyro.infer import Trace_ELBO

from bayesfuse.exceptions import ConvergenceError, ConvergenceWarning
from bayesfuse.module.batch import TensorStore
from bayesfuse.module.fused_elbo import fused_elbo_loss, fused_supported, has_global_head_sites
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.train.progress import EpochProgress

__all__ = ["TrainConfig", "TrainResult", "train_svi", "elbo_loss", "make_optimizer", "clip_gradients",
           "svi_step", "validation_loss"]


@dataclass
class TrainConfig:
    """Optimisation settings (see :meth:`bayesfuse.FusionModel.fit`)."""

    max_epochs: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    kl_warmup_epochs: int = 30
    patience: int = 30
    min_epochs: int = 40
    num_particles: int = 1
    modality_dropout: float = 0.25
    modality_dropout_mode: str = "both"
    clip_norm: float = 10.0
    progress: bool = True
    elbo: str = "fused"


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def elbo_loss(module: FusionModule, batch, n_total: int, kl_scale: float = 1.0, num_particles: int = 1,
              modality_mask: torch.Tensor | None = None, method: str = "trace", hide_from: str = "both"
              ) -> torch.Tensor:
    """Negative ELBO of ``batch`` scaled to the full cohort of ``n_total`` patients (a tensor).

    ``method="trace"``: Pyro ``Trace_ELBO.differentiable_loss`` of ``module.model``/``module.guide``.
    ``method="fused"``: :func:`~bayesfuse.module.fused_elbo.fused_elbo_loss`, the same estimator in
    one vectorised pass (falls back to ``"trace"`` for several particles with Bayesian head weights
    and for modules whose model/guide it does not cover, see ``fused_supported``).
    ``hide_from``: where ``modality_mask`` hides modalities (see :meth:`FusionModule.model`).
    """
    if method not in ("trace", "fused"):
        raise ValueError(f"elbo={method!r} is not supported; use 'fused' (default, fast) or 'trace' (Pyro).")
    if method == "fused" and fused_supported(module) and (num_particles == 1 or not has_global_head_sites(module)):
        return fused_elbo_loss(module, batch, n_total, kl_scale, num_particles, modality_mask, hide_from=hide_from)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=False)
    return elbo.differentiable_loss(module.model, module.guide, batch, n_total, kl_scale, modality_mask,
                                    hide_from)


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over all parameters as one fused kernel (CPU and CUDA; foreach where fused is unavailable)."""
    params = list(module.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` with the foreach kernels; no host sync (the clip factor stays on the device)."""
    try:
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    except RuntimeError:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def svi_step(module: FusionModule, optim: torch.optim.Optimizer, params: list[torch.Tensor], train: TensorStore,
             idx: torch.Tensor, kl_scale: float, config: TrainConfig) -> torch.Tensor:
    """One optimisation step on the patients ``idx`` (LongTensor (B,) on the device) of ``train``.

    Returns the detached loss (negative ELBO per patient, a 0-d device tensor; not synced).
    """
    batch = train.batch(idx)
    mmask = module.random_modality_mask(batch.presence, config.modality_dropout)
    loss = elbo_loss(module, batch, train.n, kl_scale, config.num_particles, mmask, config.elbo,
                     config.modality_dropout_mode) / train.n
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip_norm:
        clip_gradients(params, config.clip_norm)
    optim.step()
    return loss.detach()


def validation_loss(module: FusionModule, store: TensorStore, chunk: int = 1024, method: str = "fused"
                    ) -> torch.Tensor:
    """Negative ELBO per patient of a whole cohort, in chunks of ``chunk`` patients (bounded memory)."""
    total = torch.zeros((), dtype=store.presence.dtype, device=store.presence.device)
    for start in range(0, store.n, chunk):
        idx = torch.arange(start, min(store.n, start + chunk), device=store.presence.device)
        total = total + elbo_loss(module, store.batch(idx), store.n, 1.0, 1, None, method) * (idx.numel() / store.n)
    return total / store.n


def train_svi(module: FusionModule, train: TensorStore, val: TensorStore | None, config: TrainConfig,
              generator: torch.Generator) -> TrainResult:
    """Fit ``module`` by SVI on ``train``; early-stop on the validation ELBO of ``val``.

    Returns the per-epoch history (``train_loss`` and ``val_loss`` in nats per patient,
    ``kl_scale``, ``seconds``) and restores the parameters of the best validation epoch.
    """
    device = train.presence.device
    n = train.n
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, math.ceil(n / bs))
    optim = make_optimizer(module, config.lr, config.weight_decay)
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    best = (math.inf, -1, None)
    stalled = 0
    t0 = time.perf_counter()
    bar = EpochProgress(config.max_epochs) if config.progress else None
    stopped_early = False
    with pyro.validation_enabled(False):
        for epoch in range(config.max_epochs):
            module.train()
            kl_scale = min(1.0, (epoch + 1) / config.kl_warmup_epochs) if config.kl_warmup_epochs > 0 else 1.0
            perm = torch.randperm(n, generator=generator).to(device)
            total = torch.zeros((), dtype=train.presence.dtype, device=device)
            for s in range(steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs]
                total = total + svi_step(module, optim, params, train, idx, kl_scale, config)
            train_loss = float(total) / steps_per_epoch
            val_loss = math.nan
            if val is not None and val.n > 0:
                module.eval()
                with torch.no_grad():
                    val_loss = float(validation_loss(module, val, max(bs, 1024), config.elbo))
            rows.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "kl_scale": kl_scale,
                         "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.update(train_loss, val_loss)
            if not math.isfinite(train_loss):
                if best[2] is None:
                    raise ConvergenceError(
                        f"Training diverged (non-finite loss) at epoch {epoch}, before the KL warm-up ended and any "
                        "parameters were validated; there is nothing usable to keep. Lower lr=, standardise the "
                        "inputs, or check for extreme values.")
                warnings.warn(f"Non-finite training loss at epoch {epoch}; stopping and keeping the best "
                              "parameters so far. Lower lr= or check the input scaling.", ConvergenceWarning,
                              stacklevel=3)
                break
            monitor = val_loss if math.isfinite(val_loss) else train_loss
            # Only compare after warm-up: the loss changes meaning while the KL weight ramps.
            if kl_scale >= 1.0:
                if monitor < best[0] - 1e-4 * abs(best[0]) if math.isfinite(best[0]) else True:
                    best = (monitor, epoch, copy.deepcopy(module.state_dict()))
                    stalled = 0
                else:
                    stalled += 1
                if epoch + 1 >= config.min_epochs and stalled >= config.patience and val is not None:
                    stopped_early = True
                    break
    if bar is not None:
        bar.close(best[1], stopped_early)
    if best[2] is not None:
        module.load_state_dict(best[2])
    module.eval()
    return TrainResult(history=pd.DataFrame(rows), best_epoch=best[1], stopped_early=stopped_early,
                       seconds=time.perf_counter() - t0)
