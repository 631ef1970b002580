"""Command line: ``bayesfuse fit | predict | evaluate | demo``.

Examples
--------
    bayesfuse demo --out bayesfuse_demo
    bayesfuse fit ../shared/data/tcga_gbmlgg --head subtype=categorical --split train \
        --drop-features mutation:IDH1,IDH2 --drop-features cnv_arm:1p,19q --out model_dir
    bayesfuse predict model_dir ../shared/data/tcga_gbmlgg --split test --out predictions/
    bayesfuse evaluate model_dir ../shared/data/tcga_gbmlgg --split test --out report/
    torchrun --standalone --nproc_per_node=4 -m bayesfuse.cli fit ../shared/data/tcga_gbmlgg \
        --head subtype=categorical --split train --distributed --batch-size 1024 --out model_dir
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesfuse._cli_types import latent_dim_arg

__all__ = ["main"]


def _read_data(path: str, modality: list[str] | None, targets: str | None, drop: list[str] | None,
               backed: bool = False, layer: str | None = None):
    import bayesfuse as bf
    from bayesfuse.data.multimodal import read_table

    is_h5mu = path is not None and str(path).endswith(".h5mu") and not modality
    if (backed or layer is not None) and not is_h5mu:
        raise bf.exceptions.ArgumentError("--backed and --layer apply to an .h5mu file (MuData); give one as the "
                                          "data argument, or leave them out for a CSV folder / --modality.")

    drop_features: dict[str, list[str]] = {}
    for item in drop or []:
        mod, _, cols = item.partition(":")
        if not cols:
            raise bf.exceptions.DataError(f"--drop-features {item!r}: use MODALITY:COL1,COL2 (e.g. "
                                          "mutation:IDH1,IDH2).")
        drop_features.setdefault(mod, []).extend(cols.split(","))
    if modality:
        frames = {}
        for item in modality:
            name, _, p = item.partition("=")
            if not p or not name:
                raise bf.exceptions.DataError(f"--modality {item!r}: use NAME=PATH.csv (e.g. expr=expr.csv.gz).")
            frames[name] = read_table(p, f"--modality {name}")
        tg = read_table(targets, "--targets") if targets else None
        return _drop(bf.MultiModalData.from_frames(frames, targets=tg), drop_features)
    if path is None:
        raise bf.exceptions.DataError("Give a dataset folder (shared layout), an .h5mu file, or --modality "
                                      "NAME=PATH.csv ... [--targets PATH].")
    if is_h5mu:   # MuData: modalities = mdata.mod, targets = the global obs columns
        from bayesfuse.data.scverse import read_h5mu

        return _drop(bf.MultiModalData.from_mudata(read_h5mu(path, backed=backed), layer=layer,
                                                   name=Path(path).stem), drop_features)
    return _drop(bf.MultiModalData.read_dir(path), drop_features)


def _drop(data, drop_features: dict[str, list[str]]):
    """``data.drop_features`` with the CLI's wording when a column does not exist (the Python
    message suggests ``errors='ignore'``, which the command line cannot pass)."""
    import bayesfuse as bf

    if not drop_features:
        return data
    try:
        return data.drop_features(drop_features)
    except bf.exceptions.DataError as err:
        raise bf.exceptions.DataError(f"--drop-features: {str(err).split('; pass errors=')[0]}; check the column "
                                      "names (case-sensitive) or leave that entry out.") from err


def _parse_heads(items: list[str] | None, nonpositive_times: str = "error"):
    import bayesfuse as bf

    heads = {}
    for item in items or []:
        key, _, kind = item.partition("=")
        kind = kind or "categorical"
        if kind == "survival":
            heads[key] = bf.heads.Survival(nonpositive_times=nonpositive_times)
        elif kind.startswith("survival:"):
            cols = kind.split(":", 1)[1].split(",")
            if len(cols) != 2 or not all(cols):
                raise bf.exceptions.DataError(f"--head {item!r}: write TARGET=survival:TIME,EVENT (two column "
                                              "names separated by a comma), e.g. survival=survival:time,event.")
            heads[key] = bf.heads.Survival(time=cols[0], event=cols[1], nonpositive_times=nonpositive_times)
        elif kind == "categorical":
            heads[key] = kind
        else:
            raise bf.exceptions.DataError(f"--head {item!r}: unknown head type {kind!r}; write TARGET=categorical "
                                          "or TARGET=survival[:TIME,EVENT].")
    return heads


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="dataset folder (<modality>.csv.gz files + targets.csv) or a MuData "
                   ".h5mu file (modalities = mdata.mod, targets = mdata.obs; needs bayesfuse[scverse])")
    p.add_argument("--backed", action="store_true",
                   help="with an .h5mu file: keep the matrices on disk and read them in row chunks")
    p.add_argument("--layer", help="with an .h5mu file: read layers[LAYER] of every modality instead of .X")
    p.add_argument("--modality", action="append", help="NAME=PATH.csv (instead of a folder); repeatable")
    p.add_argument("--targets", help="targets CSV (with --modality)")
    p.add_argument("--split", help="use only the samples of this split (targets column 'split')")
    p.add_argument("--drop-features", action="append", help="MODALITY:COL1,COL2 (e.g. label-defining columns)")


def cmd_fit(args) -> int:
    import bayesfuse as bf
    from bayesfuse._atomic import check_output_dir

    check_output_dir(args.out, args.overwrite, "--overwrite")   # before a long fit, not after it
    data = _read_data(args.data, args.modality, args.targets, args.drop_features, args.backed, args.layer)
    if args.split:
        data = data.subset(split=args.split)
    if args.distributed:
        return _fit_distributed(args, data)
    model = bf.FusionModel(data, heads=_parse_heads(args.head, args.nonpositive_times), latent_dim=args.latent_dim, device=args.device)
    model.fit(max_epochs=args.max_epochs, batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
              checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every if args.checkpoint_dir else 0,
              resume=args.resume)
    model.save(args.out, overwrite=args.overwrite)
    print(f"fitted {model!r}\n{len(model.history_)} epochs in {model.fit_seconds_:.1f} s; saved to {args.out}")
    return 0


def _fit_distributed(args, data) -> int:
    """``fit --distributed``: data-parallel SVI on every torchrun rank (docs/benchmarks.md); rank 0 saves.

    Without torchrun's environment (``WORLD_SIZE`` unset or 1) it runs as one process. Each rank
    uses its own device (``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo); ``--batch-size`` is
    the global minibatch; no validation split / early stopping (``--max-epochs`` epochs).
    """
    import torch.distributed as dist

    import bayesfuse as bf
    from bayesfuse.model.distributed import fit_distributed
    from bayesfuse.train.distributed import init_from_env

    rank, world, device = init_from_env()
    try:
        model = bf.FusionModel(data, heads=_parse_heads(args.head, args.nonpositive_times), latent_dim=args.latent_dim, device=str(device))
        fit_distributed(model, max_epochs=args.max_epochs, batch_size=args.batch_size, seed=args.seed)
        if rank == 0:
            model.save(args.out, overwrite=args.overwrite)
            print(f"fitted {model!r}\n{len(model.history_)} epochs on {world} process(es) in "
                  f"{model.fit_seconds_:.1f} s; saved to {args.out}")
        if dist.is_initialized():
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def cmd_predict(args) -> int:
    import bayesfuse as bf

    model = bf.FusionModel.load(args.model, device=args.device)
    data = _read_data(args.data, args.modality, args.targets, args.drop_features, args.backed, args.layer)
    if args.split:
        data = data.subset(split=args.split)
    from bayesfuse._atomic import atomic_output_dir, check_output_dir

    check_output_dir(args.out, args.overwrite, "--overwrite")
    post = model.predict(data, num_samples=args.num_samples, seed=args.seed)
    out = Path(args.out)
    written = [out / "predictions.csv"]
    with atomic_output_dir(out, args.overwrite, "--overwrite") as tmp:   # all files or none
        post.summary(prob=0.9).to_csv(tmp / "predictions.csv", index=False)
        for key, spec in model.heads.items():   # survival heads: S(t | x) mean and 90% band at the head's cuts
            if isinstance(spec, bf.heads.Survival):
                written.append(out / f"survival_{key}.csv")
                post.survival_summary(key, post.default_times(key), prob=0.9).to_csv(tmp / written[-1].name,
                                                                                    index=False)
        post.to_inference_data().to_netcdf(str(tmp / "draws.nc"))
    print(f"{post.n_patients} patients x {post.num_samples} draws -> {', '.join(map(str, written))}, {out/'draws.nc'}")
    return 0


def cmd_evaluate(args) -> int:
    from bayesfuse._atomic import atomic_output_dir, check_output_dir
    from bayesfuse.evaluation.report import build_report

    check_output_dir(args.out, args.overwrite, "--overwrite")
    data = _read_data(args.data, args.modality, args.targets, args.drop_features, args.backed, args.layer)
    if args.split:
        data = data.subset(split=args.split)
    with atomic_output_dir(args.out, args.overwrite, "--overwrite") as tmp:
        rep = build_report(args.model, data, tmp, head=args.head, max_risk=args.max_risk, delta=args.delta,
                           calibration_fraction=args.calibration_fraction, seed=args.seed,
                           num_samples=args.num_samples, starts=args.starts,
                           survival_max_risk=args.survival_max_risk, horizon=args.horizon, alpha=args.alpha)
    markdown = Path(args.out) / Path(rep.markdown).name
    for r in rep.heads.values():
        if r.kind == "categorical":
            print(f"{r.head}: threshold {r.threshold:.4g}, test coverage {r.coverage:.3f}, error among accepted "
                  f"{r.error:.3f} (target <= {rep.max_risk:g} w.p. >= {1 - rep.delta:g})")
        else:
            lb = r.tables["lower_bound"].iloc[0]
            print(f"{r.head}: high/low call at horizon {r.horizon:g}: test coverage {r.coverage:.3f}, wrong calls "
                  f"among accepted (IPCW) {r.error:.3f} (target <= {args.survival_max_risk:g}); lower bound "
                  f"coverage {lb['coverage (known status)']:.3f} (target >= {1 - args.alpha:g}), mean bound "
                  f"{lb['mean bound']:.4g}")
    if rep.multitask is not None:
        print(f"joint over {list(rep.multitask.index)}: test coverage {rep.multitask['coverage'].iloc[0]:.3f}, "
              + ", ".join(f"{h} error {e:.3f}" for h, e in rep.multitask["error among jointly accepted"].items()))
    print(f"report written to {markdown} ({len(rep.figures)} figures, {rep.seconds:.1f} s)")
    return 0


def cmd_demo(args) -> int:
    from bayesfuse._atomic import atomic_output_dir
    from bayesfuse.evaluation.demo import run_demo

    with atomic_output_dir(args.out, args.overwrite, "--overwrite") as tmp:
        table = run_demo(tmp, quick=args.quick or None, seed=args.seed, progress=not args.quiet)
    import pandas as pd

    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("bayesfuse demo: simulated 4-modality cohort (20% of modalities missing at random), "
              "800 training and 1,200 test patients")
        print(table.to_string())   # every column (a plain print elides the middle ones, ECE among them)
    print(f"report written to {args.out}/ (metrics.csv, metrics.json, predictions.csv, *.png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesfuse", description="Bayesian multimodal fusion for cancer data.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1, or OMP_NUM_THREADS when set)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit a model and save it")
    _add_data_args(p)
    p.add_argument("--head", action="append",
                   help="TARGET=categorical | TARGET=survival[:TIME,EVENT]; repeatable (none = unsupervised)")
    p.add_argument("--nonpositive-times", choices=("error", "shift", "drop"), default="error",
                   help="survival heads: follow-up times <= 0 are an error (default), 'shift'ed to half the "
                        "smallest positive time, or 'drop'ped (survival label unknown)")
    p.add_argument("--latent-dim", type=latent_dim_arg, default="auto",
                   help="size of the shared latent; auto (default) = 16, 32 for a survival-only model with >= 64 features")
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128, help="minibatch (global over ranks with --distributed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="ignored with --distributed (each rank uses its own)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training under torchrun (one process per GPU); rank 0 saves; "
                        "fixed --max-epochs, no early stopping; a single process without torchrun")
    p.add_argument("--checkpoint-dir", help="write atomic training checkpoints to this folder")
    p.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints (default 10)")
    p.add_argument("--resume", help="continue an interrupted fit from its --checkpoint-dir (same arguments)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fit)
    p = sub.add_parser("predict", help="posterior summaries (CSV: predictions.csv for categorical heads, "
                       "survival_<head>.csv for survival heads) and draws (NetCDF) for a dataset")
    p.add_argument("model", help="saved model directory")
    _add_data_args(p)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="calibrate 'I don't know' on half the labelled data, report on the rest")
    p.add_argument("model", help="saved model directory")
    _add_data_args(p)
    p.add_argument("--head", help="report only this head (default: all)")
    p.add_argument("--max-risk", type=float, default=0.05, help="tolerated error among accepted patients")
    p.add_argument("--delta", type=float, default=0.1, help="tolerated failure probability of the guarantee")
    p.add_argument("--calibration-fraction", type=float, default=0.5)
    p.add_argument("--starts", type=int, default=4, help="LTT start points, default 4 (fallback procedure; 1 = plain fixed sequence)")
    p.add_argument("--survival-max-risk", type=float, default=0.2,
                   help="survival heads: tolerated share of wrong high/low calls at the horizon among accepted")
    p.add_argument("--horizon", type=float, default=None,
                   help="survival heads: horizon of the high/low call (default: KM median of the calibration half)")
    p.add_argument("--alpha", type=float, default=0.1, help="survival heads: miscoverage of the lower bound on T")
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (report.md + PNG figures)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("demo", help="simulate a cohort, fit, predict, print a table, write a report")
    p.add_argument("--out", default="bayesfuse_demo")
    p.add_argument("--quick", action="store_true", help="fewer epochs (default when CI is set)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    import torch

    args = build_parser().parse_args(argv)
    # The model's matrices are small: one CPU thread is nearly as fast as two on an idle machine, and
    # multi-threaded torch slows down by an order of magnitude when the cores are shared.
    if args.threads:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # a clear one-line message for known user errors
        from bayesfuse.exceptions import BayesFuseError

        if isinstance(exc, BayesFuseError):
            msg = str(exc)
            if "nonpositive_times=" in msg and getattr(args, "command", None) == "fit":
                msg += " On the command line: bayesfuse fit ... --nonpositive-times shift (or drop)."
            print(f"bayesfuse: error: {msg}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
