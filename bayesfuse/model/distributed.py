"""Data-parallel fitting of a :class:`bayesfuse.FusionModel` and its torchrun launcher.

The rank-level engine (global minibatch sharded by rank, DDP gradient all-reduce) lives in
:mod:`bayesfuse.train.distributed`; this module turns a ``FusionModel`` into its tensors,
calls it on every rank, and writes the fitted model (rank 0).

    torchrun --standalone --nproc_per_node=2 -m bayesfuse.model.distributed \
        --data ../shared/data/tcga_gbmlgg --split train --head subtype=categorical --out model_dir
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

from bayesfuse._cli_types import latent_dim_arg
from bayesfuse.train.distributed import init_from_env, train_distributed
from bayesfuse.train.svi import TrainConfig

__all__ = ["fit_distributed", "main"]


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
    store = model._store(data, strict_targets=True, ids=data.sample_ids[has_any])  # no copy of the tables
    model.module = model._build_module()
    model.imputation_calibration_ = {}   # a recalibration of the old module does not apply to the new one
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
    # Same post-fit step as FusionModel.fit (head-weight refit + diagnostics_ for Bayesian modes);
    # every rank runs it with the same seed on the same store, so the ranks stay identical.
    model._finish_bayesian(store, seed)
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
    """``python -m bayesfuse.model.distributed`` (under torchrun): read, fit data-parallel, save (rank 0)."""
    ap = argparse.ArgumentParser(prog="python -m bayesfuse.model.distributed", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (MultiModalData.read_dir)")
    ap.add_argument("--split", default=None, help="train on this split only (e.g. train)")
    ap.add_argument("--head", action="append", default=[], help="COLUMN=KIND, repeatable")
    ap.add_argument("--drop", action="append", default=[], help="MODALITY:FEATURE to drop (leakage), repeatable")
    ap.add_argument("--latent-dim", type=latent_dim_arg, default="auto")
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
    from bayesfuse.model.fusion_model import FusionModel  # noqa: PLC0415  (import cycle: fusion_model -> here)

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
