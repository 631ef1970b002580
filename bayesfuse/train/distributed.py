"""Data-parallel SVI with ``torch.distributed`` (DistributedDataParallel), launched by ``torchrun``.

Every rank holds the cohort, draws the same global minibatch of ``batch_size`` patients
(shared seeded permutation) and computes the ELBO of its own shard of that minibatch
(``tensor_split`` by rank); DDP all-reduces (averages) the gradients, so each step is the
step one process would take on the global minibatch. The Monte-Carlo noise and the
modality-dropout draws are drawn for the global minibatch from a generator seeded alike on
every rank and sliced, so with ``encoder_dropout=0`` the parameters after ``k`` steps equal
those of a single process on the same global batches up to float summation order
(``tests/test_distributed.py``). Encoder dropout masks are drawn per rank.

Launch (one process per GPU, or per CPU socket with the gloo backend)::

    torchrun --standalone --nproc_per_node=4 -m bayesfuse.model.distributed \\
        --data ../shared/data/tcga_gbmlgg --split train --head subtype=categorical --out fitted/

See docs/benchmarks.md for SLURM. Differences from :meth:`FusionModel.fit`: no validation
split / early stopping (a fixed number of epochs with KL warm-up), and the final parameters
are kept.
"""

from __future__ import annotations

import math
import os
import time

import pandas as pd
import torch
import torch.distributed as dist

from bayesfuse.module.batch import TensorStore
from bayesfuse.train.svi import TrainConfig, TrainResult, clip_gradients, make_optimizer

__all__ = ["train_distributed", "init_from_env"]


def init_from_env(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ...).

    Returns ``(rank, world_size, device)``: ``cuda:LOCAL_RANK`` with NCCL when CUDA is available,
    else the CPU with gloo. Without torchrun's variables this is a single process (0, 1, device).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, device
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device


def train_distributed(module: torch.nn.Module, store: TensorStore, config: TrainConfig, seed: int = 0,
                      max_steps: int | None = None) -> TrainResult:
    """Data-parallel SVI of a :class:`~bayesfuse.module.FusionModule` on ``store``.

    Works in a single process too (no process group, or world size 1): it is then the same
    computation on one rank.

    Parameters
    ----------
    module : FusionModule
        On this rank's device; rank 0's initial parameters are broadcast by DDP.
    store : TensorStore
        The whole training cohort (``N`` patients) on this rank's device.
    config : TrainConfig
        ``batch_size`` is the *global* minibatch (split over the ranks); a last global
        minibatch with fewer patients than ranks is skipped.
    seed : int
        Seeds the shared permutation / noise stream (alike on every rank) and, with the rank
        added, each rank's encoder-dropout stream.
    max_steps : int, optional
        Stop after this many optimisation steps (for tests and benchmarks).

    Returns
    -------
    TrainResult
        ``history`` with the global mean ``train_loss`` per epoch (all-reduced).
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = store.presence.device
    n, bs = store.n, min(config.batch_size, store.n)
    if bs < world:
        raise ValueError(f"batch_size={bs} is smaller than the {world} ranks; use a global batch >= world size.")
    steps_per_epoch = max(1, math.ceil(n / bs))
    torch.manual_seed(seed + 7919 * rank)  # encoder dropout: a distinct stream per rank
    shared = torch.Generator(device=device)
    shared.manual_seed(seed)
    if distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                                        else None, broadcast_buffers=False)
    else:
        ddp = module
    optim = make_optimizer(module, config.lr, config.weight_decay)
    params = [p for p in module.parameters() if p.requires_grad]
    M, D, P = store.presence.shape[0], module.latent_dim, config.num_particles
    rows, step, t0 = [], 0, time.perf_counter()
    module.train()
    for epoch in range(config.max_epochs):
        kl_scale = min(1.0, (epoch + 1) / config.kl_warmup_epochs) if config.kl_warmup_epochs > 0 else 1.0
        perm = torch.randperm(n, generator=shared, device=device)
        total = torch.zeros((), dtype=store.presence.dtype, device=device)
        done = 0
        for s in range(steps_per_epoch):
            gidx = perm[s * bs:(s + 1) * bs]
            g = gidx.numel()
            eps = torch.randn((P, g, D) if P > 1 else (g, D), generator=shared, dtype=store.presence.dtype,
                              device=device)
            u = torch.rand((M, g), generator=shared, dtype=store.presence.dtype, device=device)
            if g < world:
                continue
            bounds = [int(b) for b in torch.linspace(0, g, world + 1).round().tolist()]
            lo, hi = bounds[rank], bounds[rank + 1]
            batch = store.batch(gidx[lo:hi])
            mmask = module.random_modality_mask(batch.presence, config.modality_dropout, u=u[:, lo:hi])
            # rank loss = -(world / g) * sum over its patients; DDP averages over ranks -> -(1/g) * sum over all.
            n_eff = n * (hi - lo) * world / g
            loss = ddp(batch, n_eff, kl_scale, P, mmask, eps[..., lo:hi, :], config.modality_dropout_mode) / n
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm:
                clip_gradients(params, config.clip_norm)
            optim.step()
            total = total + loss.detach()
            done += 1
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        if distributed:
            dist.all_reduce(total)
            total = total / world
        rows.append({"epoch": epoch, "train_loss": float(total) / max(done, 1), "kl_scale": kl_scale,
                     "seconds": time.perf_counter() - t0})
        if max_steps is not None and step >= max_steps:
            break
    module.eval()
    return TrainResult(history=pd.DataFrame(rows), best_epoch=len(rows) - 1, stopped_early=False,
                       seconds=time.perf_counter() - t0, extra={"world_size": world, "steps": step})
