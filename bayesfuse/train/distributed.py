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

    torchrun --standalone --nproc_per_node=4 -m bayesfuse.train.distributed \\
        --data ../shared/data/tcga_gbmlgg --split train --head subtype=categorical --out fitted/

See docs/benchmarks.md for SLURM. Differences from :meth:`FusionModel.fit`: no validation
split / early stopping (a fixed number of epochs with KL warm-up), and the final parameters
are kept.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import pandas as pd
import torch
import torch.distributed as dist

from bayesfuse.module.batch import TensorStore
from bayesfuse.train.svi import TrainConfig, TrainResult, clip_gradients, make_optimizer

__all__ = ["train_distributed", "fit_distributed", "init_from_env", "main"]


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
            loss = ddp(batch, n_eff, kl_scale, P, mmask, eps[..., lo:hi, :]) / n
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


def fit_distributed(model, max_epochs: int = 300, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                    kl_warmup_epochs: int = 30, modality_dropout: float = 0.25, num_particles: int = 1,
                    weight_decay: float = 0.0, max_steps: int | None = None):
    """Fit a :class:`bayesfuse.FusionModel` data-parallel (call on every rank, same arguments).

    The model must have been built alike on every rank (same data, same settings) with
    ``device`` set to the rank's device. ``batch_size`` is the global minibatch. Returns the
    model with the trained module (identical on every rank).
    """
    from bayesfuse._settings import seed_everything  # noqa: PLC0415

    seed_everything(seed)
    data = model._train_data
    has_any = data.presence.to_numpy().any(axis=1)
    store = model._store(data.subset(ids=data.sample_ids[has_any]), strict_targets=True)
    model.module = model._build_module()
    config = TrainConfig(max_epochs=max_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         kl_warmup_epochs=kl_warmup_epochs, num_particles=num_particles,
                         modality_dropout=modality_dropout, progress=False)
    result = train_distributed(model.module, store, config, seed=seed, max_steps=max_steps)
    model.history_ = result.history
    model.best_epoch_ = result.best_epoch
    model.stopped_early_ = False
    model.fit_seconds_ = result.seconds
    model.train_config_ = {**config.__dict__, "seed": seed, "validation_fraction": 0.0,
                           "n_train": store.n, "n_validation": 0, **result.extra}
    return model


def _parse_heads(specs: list[str]) -> dict[str, str]:
    heads = {}
    for s in specs:
        if "=" not in s:
            raise SystemExit(f"--head {s!r}: use COLUMN=KIND, e.g. subtype=categorical.")
        k, v = s.split("=", 1)
        heads[k] = v
    return heads


def main(argv: list[str] | None = None) -> None:
    """``python -m bayesfuse.train.distributed`` (under torchrun): read, fit data-parallel, save (rank 0)."""
    ap = argparse.ArgumentParser(prog="python -m bayesfuse.train.distributed", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (MultiModalData.read_dir)")
    ap.add_argument("--split", default=None, help="train on this split only (e.g. train)")
    ap.add_argument("--head", action="append", default=[], help="COLUMN=KIND, repeatable")
    ap.add_argument("--drop", action="append", default=[], help="MODALITY:FEATURE to drop (leakage), repeatable")
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256, help="global minibatch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for FusionModel.save (written by rank 0)")
    ap.add_argument("--backend", default=None, help="nccl (GPU default) or gloo (CPU default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", 1))))
    rank, world, device = init_from_env(args.backend)
    from bayesfuse.data.multimodal import MultiModalData  # noqa: PLC0415
    from bayesfuse.model.fusion_model import FusionModel  # noqa: PLC0415

    data = MultiModalData.read_dir(args.data)
    if args.split:
        data = data.subset(split=args.split)
    if args.drop:
        drop: dict[str, list[str]] = {}
        for spec in args.drop:
            m, _, f = spec.partition(":")
            drop.setdefault(m, []).append(f)
        data = data.drop_features(drop)
    model = FusionModel(data, heads=_parse_heads(args.head), latent_dim=args.latent_dim, hidden=args.hidden,
                        device=str(device))
    fit_distributed(model, max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    if rank == 0:
        path = model.save(args.out, overwrite=True)
        print(f"world_size={world} device={device} epochs={len(model.history_)} "
              f"final train_loss={model.history_['train_loss'].iloc[-1]:.3f} seconds={model.fit_seconds_:.1f} "
              f"-> {path}")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
