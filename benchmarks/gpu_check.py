"""Prepared GPU check: gpu-marked tests, fit + predict on CUDA, CPU-vs-CUDA agreement, throughput.

Run on a machine with CUDA after the README's install command (this script installs nothing)::

    python benchmarks/gpu_check.py --json gpu_check.json          # < 8 minutes on one H100/H200

1. ``pytest -m gpu tests`` (the gpu-marked tests), in a subprocess.
2. Agreement: the same fit (same seeds) on the CPU and on CUDA, on ``tcga_gbmlgg`` (subtype head, leakage
   features dropped; ``--seeds`` fits per device) and on a simulated ``--patients`` x ``--modalities`` x
   ``--features`` cohort (``--epochs`` epochs). CUDA draws differ from CPU draws, so the fits agree in
   distribution, not bit for bit: test accuracy within ``--tol-acc`` and mean test NLL within ``--tol-nll``
   (nats) of each other (means over seeds), else the check fails.
3. Throughput on the simulated cohort at ``--batch-sizes`` (256 ... 16,384): median step time of
   ``svi_step`` (device-synced), samples/s, peak GPU memory, and the achieved share of the device's
   FP32 rate: step FLOPs (the Linear layers' forward, weight-gradient and input-gradient matmuls,
   counted from the module) / step time, over a measured 8192^3 FP32 GEMM (TF32 off, torch's default).
   With ``--compile`` also the compiled step (``fit(compile=True)``) and its compile seconds.

Exit status 0 when every part passed, 1 when one failed, 2 without a CUDA device (a clear message).
``--device cpu`` runs the same path on the CPU (used by ``tests/test_gpu_check.py`` with tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BAYESFUSE_SHARED_DATA", ROOT / ".." / "shared" / "data"))
LEAKAGE = {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}


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
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: no CUDA device is available (torch {torch.__version__}, built with CUDA "
                         f"{torch.version.cuda}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch, "
                         "or pass --device cpu to exercise the CPU path.")
    return dev


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fit_metrics(train, test, device: str, seed: int, **fit) -> dict:
    """Fit on ``train``, predict ``test`` (100 draws); accuracy and mean NLL of the subtype head."""
    import numpy as np

    import bayesfuse as bf

    t = time.perf_counter()
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, device=device)
    model.fit(seed=seed, progress=False, **fit)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    post = model.predict(test, num_samples=100, seed=seed)
    t_pred = time.perf_counter() - t
    p = post.mean_probs("subtype").to_numpy()
    y = test.targets["subtype"].astype(str).to_numpy()
    code = {str(c): i for i, c in enumerate(post.classes("subtype"))}
    yi = np.array([code.get(v, -1) for v in y])
    ok = yi >= 0
    return {"accuracy": float((p.argmax(1)[ok] == yi[ok]).mean()),
            "nll": float(-np.log(np.clip(p[ok, yi[ok]], 1e-12, None)).mean()),
            "fit_s": t_fit, "predict_s": t_pred, "epochs": len(model.history_)}


def agreement(name: str, train, test, device: str, seeds, tol_acc: float, tol_nll: float, **fit) -> dict:
    import numpy as np

    runs = {d: [fit_metrics(train, test, d, s, **fit) for s in seeds] for d in ("cpu", device)}
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
    import torch

    first = {id(enc.net[0]) for enc in module.encoders.values()}   # no input gradient: x needs none
    flops = 0.0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            mac = batch * layer.in_features * layer.out_features
            flops += 2 * mac * (2 if id(layer) in first else 3)
    return flops


def gemm_rate(dev, n: int = 8192) -> float:
    """Measured FP32 GEMM FLOP/s (``n`` x ``n`` x ``n``; smaller on the CPU)."""
    import torch

    n = n if dev.type == "cuda" else 512
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    sync(dev)
    reps = 10
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def throughput(data, dev, batch_sizes, steps: int, compile_step: bool) -> list[dict]:
    import numpy as np
    import torch

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
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            times = []
            for i in range(steps + 3):
                idx = torch.randint(0, store.n, (bs,), generator=gen).to(dev)
                sync(dev)
                t = time.perf_counter()
                svi_step(module, optim, params, store, idx, 1.0, cfg, loss_fn=loss_fn)
                sync(dev)
                if i >= 3:   # warm-up
                    times.append(time.perf_counter() - t)
            step = float(np.median(times))
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
    import warnings

    import torch

    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    import bayesfuse as bf

    t0 = time.perf_counter()
    out: dict = {"device": str(dev), "torch": torch.__version__,
                 "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    print(f"gpu_check on {out['device_name']} (torch {torch.__version__})", flush=True)
    ok = True
    if not args.no_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                              cwd=ROOT, capture_output=True, text=True)
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
        tcga = bf.MultiModalData.read_dir(DATA / "tcga_gbmlgg", drop_features=LEAKAGE)
        out["agreement"].append(agreement("tcga_gbmlgg", tcga.subset(split="train"), tcga.subset(split="test"),
                                          str(dev), args.seeds, args.tol_acc, args.tol_nll))
    ok &= all(a["ok"] for a in out["agreement"])
    out["throughput"] = throughput(train, dev, args.batch_sizes, args.steps, args.compile)
    out["seconds"] = time.perf_counter() - t0
    out["ok"] = bool(ok)
    print(f"gpu_check {'passed' if ok else 'FAILED'} in {out['seconds']:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
