"""Prepared GPU check: gpu-marked tests, fit + predict on CUDA, CPU-vs-CUDA agreement, throughput.

Run on a machine with CUDA after the README's install command (this script installs nothing)::

    python benchmarks/gpu_check.py --json gpu_check.json          # < 8 minutes on one H100/H200

``pytest -m gpu``, CPU-vs-CUDA fits within ``--tol-acc`` / ``--tol-nll``, step throughput at ``--batch-sizes``
(docs/benchmarks.md, section 6). Exit status 0 when every part passed, 1 when one failed, 2 without a CUDA
device (a clear message). ``--device cpu`` runs the same path on the CPU (``tests/test_gpu_check.py``).
"""

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, LEAKAGE, REPO, bayesfuse_classification, step_times, write_json  # noqa: E402


class NoCUDA(SystemExit):
    """No CUDA device: the message is the exit code's text; run as a script the exit status is 2."""


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the CPU path, for tests)")
    ap.add_argument("--patients", type=int, default=50_000)
    ap.add_argument("--modalities", type=int, default=4)
    ap.add_argument("--features", type=int, default=2_000)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the simulated-cohort fits")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tol-acc", type=float, default=0.05)
    ap.add_argument("--tol-nll", type=float, default=0.15)
    ap.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    ap.add_argument("--no-tcga", action="store_true", help="skip tcga_gbmlgg (e.g. data not mounted)")
    ap.add_argument("--compile", action="store_true", help="also time the compiled step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.patients < 10 or args.modalities < 1 or args.features < 1:
        ap.error("--batch-sizes, --patients, --modalities and --features must be positive (patients >= 10)")
    return args


def require_device(device: str):
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoCUDA(f"gpu_check: no CUDA device is available (torch {torch.__version__}, built with CUDA "
                         f"{torch.version.cuda}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch, "
                         "or pass --device cpu to exercise the CPU path.")
    return dev


def syncer(dev):
    """``sync()`` of ``dev`` (None on the CPU)."""
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None


def agreement(name: str, train, test, device: str, seeds, tol_acc: float, tol_nll: float, **fit) -> dict:
    """The same fits on the CPU and on ``device``: test accuracy and mean NLL (100 draws) within tolerance."""
    runs = {d: [bayesfuse_classification(train, test, "subtype", s, {"device": d}, fit, num_samples=100)
                for s in seeds] for d in ("cpu", device)}
    mean = {d: {k: float(np.mean([r[k] for r in rs])) for k in ("accuracy", "nll", "fit_s", "predict_s")}
            for d, rs in runs.items()}
    d_acc = abs(mean["cpu"]["accuracy"] - mean[device]["accuracy"])
    d_nll = abs(mean["cpu"]["nll"] - mean[device]["nll"])
    ok = d_acc <= tol_acc and d_nll <= tol_nll
    print(f"[agree] {name}: cpu acc {mean['cpu']['accuracy']:.3f} nll {mean['cpu']['nll']:.3f} "
          f"({mean['cpu']['fit_s']:.1f} s fit) | {device} acc {mean[device]['accuracy']:.3f} "
          f"nll {mean[device]['nll']:.3f} ({mean[device]['fit_s']:.1f} s fit) | |d acc| {d_acc:.3f} <= {tol_acc}, "
          f"|d nll| {d_nll:.3f} <= {tol_nll}: {'ok' if ok else 'FAILED'}", flush=True)
    return {"name": name, "runs": runs, "mean": mean, "d_acc": d_acc, "d_nll": d_nll, "ok": ok}


def step_flops(module, batch: int) -> float:
    """Matmul FLOPs of one training step (forward, weight and input gradients of every Linear)."""
    first = {id(enc.net[0]) for enc in module.encoders.values()}   # no input gradient: x needs none
    return float(sum(2 * batch * lin.in_features * lin.out_features * (2 if id(lin) in first else 3)
                     for lin in module.modules() if isinstance(lin, torch.nn.Linear)))


def gemm_rate(dev, n: int = 8192) -> float:
    """Measured FP32 GEMM FLOP/s (``n`` x ``n`` x ``n``; smaller on the CPU)."""
    n = n if dev.type == "cuda" else 512
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    return 2 * n ** 3 * 10 / sum(step_times(lambda: a @ b, 10, warmup=1, sync=syncer(dev)))


def throughput(data, dev, batch_sizes, steps: int, compile_step: bool) -> list[dict]:
    import bayesfuse as bf
    from bayesfuse.train.svi import StepCompiler, TrainConfig, make_optimizer, svi_step

    model = bf.FusionModel(data, heads={"subtype": "categorical"}, device=str(dev))
    store = model._store(data, strict_targets=True)
    peak = gemm_rate(dev)
    rows = []
    for bs in batch_sizes:
        bs = min(bs, store.n)
        for compiled in (False, True) if compile_step else (False,):
            torch.manual_seed(0)
            module = model._build_module().train()
            cfg = TrainConfig(batch_size=bs, compile="always" if compiled else "never")
            optim, params = make_optimizer(module, cfg.lr), list(module.parameters())
            comp = StepCompiler(module, store, cfg, bs)
            comp.start_epoch()
            loss_fn = comp.loss_fn(bs)
            gen = torch.Generator().manual_seed(1)
            idx = iter([torch.randint(0, store.n, (bs,), generator=gen).to(dev) for _ in range(steps + 3)])
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)

            def one_step():
                svi_step(module, optim, params, store, next(idx), 1.0, cfg, loss_fn=loss_fn)  # noqa: B023

            step = float(np.median(step_times(one_step, steps, warmup=3, sync=syncer(dev))))
            flops = step_flops(module, bs)
            row = {"batch_size": bs, "compiled": compiled and comp.info["used"], "step_ms": 1000 * step,
                   "samples_per_s": bs / step, "achieved_tflops": flops / step / 1e12,
                   "fraction_of_gemm_rate": flops / step / peak, "gemm_tflops": peak / 1e12,
                   "compile_s": comp.info["compile_seconds"],
                   "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}
            rows.append(row)
            print(f"[speed] batch {bs:>6} {'compiled' if row['compiled'] else 'eager':>8}: {row['step_ms']:8.2f} ms "
                  f"{row['samples_per_s']:>10.0f} samples/s  {row['achieved_tflops']:.2f} TFLOP/s = "
                  f"{100 * row['fraction_of_gemm_rate']:.1f}% of the measured FP32 GEMM rate "
                  f"({row['gemm_tflops']:.1f} TFLOP/s)  peak GPU memory {row['peak_gpu_mib'] or 0:.0f} MiB"
                  + (f"  compile {row['compile_s']:.1f} s" if row["compiled"] else ""), flush=True)
    return rows


def main(argv=None) -> int:
    args = parse(argv)
    dev = require_device(args.device)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(REPO))
    import bayesfuse as bf

    t0 = time.perf_counter()
    out: dict = {"device": str(dev), "torch": torch.__version__,
                 "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    print(f"gpu_check on {out['device_name']} (torch {torch.__version__})", flush=True)
    ok = True
    if not args.no_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                              cwd=REPO, capture_output=True, text=True)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        out["gpu_tests"] = {"returncode": proc.returncode, "summary": tail[0]}
        ok &= proc.returncode == 0
        print(f"[tests] pytest -m gpu: {tail[0]} (rc {proc.returncode})", flush=True)
    mods = {f"m{i}": ("gaussian", args.features) for i in range(args.modalities)}
    sim, _ = bf.datasets.simulate(n_patients=args.patients, modalities=mods, missing_rate=0.1, seed=0)
    train, test = sim.subset(split="train"), sim.subset(split="test")
    big = min(4096, max(64, train.n_samples // 50))
    out["agreement"] = [agreement(f"simulated {args.patients}x{args.modalities}x{args.features}", train, test,
                                  str(dev), args.seeds[:1], args.tol_acc, args.tol_nll, max_epochs=args.epochs,
                                  kl_warmup_epochs=1, batch_size=big, validation_fraction=0.0)]
    if not args.no_tcga:
        tcga = bf.MultiModalData.read_dir(DATA / "tcga_gbmlgg", drop_features=LEAKAGE["tcga_gbmlgg"])
        out["agreement"].append(agreement("tcga_gbmlgg", tcga.subset(split="train"), tcga.subset(split="test"),
                                          str(dev), args.seeds, args.tol_acc, args.tol_nll))
    ok &= all(a["ok"] for a in out["agreement"])
    out["throughput"] = throughput(train, dev, args.batch_sizes, args.steps, args.compile)
    out["seconds"], out["ok"] = time.perf_counter() - t0, bool(ok)
    print(f"gpu_check {'passed' if ok else 'FAILED'} in {out['seconds']:.0f} s", flush=True)
    if args.json:
        write_json(out, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NoCUDA as exc:
        sys.exit(print(exc.code, file=sys.stderr) or 2)
