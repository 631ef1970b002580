"""Time per epoch and peak memory versus patients, features per modality and modalities.

One fresh subprocess per grid point (simulated Gaussian modalities, one categorical head): setup s, epoch s,
peak RSS and its increase during training (CUDA: peak device memory); points above ``--max-cells`` skipped.
``--phases``: peak RSS per phase of the user path at the first sizes (docs/benchmarks.md, section 3). Usage::

    python benchmarks/scaling.py --json scaling.json
    python benchmarks/scaling.py --patients 1000 10000 100000 --features 1000 --modalities 2
    python benchmarks/scaling.py --phases --patients 100000 --features 1000 --modalities 2 --json memory.json
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, reset_peak, rss_mib, run_child, write_json  # noqa: E402


def simulate(n: int, f: int, m: int):
    import bayesfuse as bf

    mods = {f"m{i}": ("gaussian", f) for i in range(m)}
    return bf.datasets.simulate(n_patients=n, latent_dim=4, modalities=mods, test_fraction=0.0, seed=0)[0]


def worker(n: int, f: int, m: int, epochs: int, device: str, threads: int) -> dict:
    quiet(threads)
    import torch

    import bayesfuse as bf
    from bayesfuse._settings import seed_everything
    from bayesfuse.train.svi import TrainConfig, train_svi

    t0 = time.perf_counter()
    data = simulate(n, f, m)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16, hidden=128, device=device)
    store = model._store(data, strict_targets=True)
    del data, model._train_data
    module = model._build_module()
    setup_s, setup_peak = time.perf_counter() - t0, rss_mib(peak=True)
    base, reset_ok = reset_peak(collect=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(max_epochs=epochs, batch_size=256, kl_warmup_epochs=1, progress=False)
    secs = train_svi(module, store, None, cfg, seed_everything(0)).history["seconds"].to_numpy()
    per_epoch = float(secs[-1] / len(secs)) if len(secs) else float("nan")
    out = {"patients": n, "features": f, "modalities": m, "device": device, "threads": threads,
           "setup_s": setup_s, "epoch_s": per_epoch, "epochs": len(secs),
           "us_per_patient_epoch": 1e6 * per_epoch / n, "peak_rss_mib": max(setup_peak, rss_mib(peak=True)),
           "rss_before_train_mib": base,
           "train_peak_increment_mib": (rss_mib(peak=True) - base) if reset_ok else None}
    if device.startswith("cuda"):
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def phases(n: int, f: int, m: int, threads: int, validation_fraction: float) -> dict:
    """Peak RSS and seconds of simulate -> FusionModel -> fit(max_epochs=1), the peak counter reset per
    phase."""
    quiet(threads)
    import bayesfuse as bf

    rows, state = [], {}
    steps = {"simulate": lambda: simulate(n, f, m),
             "model": lambda: bf.FusionModel(state["simulate"], heads={"subtype": "categorical"}, latent_dim=16,
                                             hidden=128, device="cpu"),
             "fit": lambda: state["model"].fit(max_epochs=1, batch_size=256, validation_fraction=validation_fraction,
                                               kl_warmup_epochs=1, progress=False)}
    overall = rss_mib(peak=True)
    for name, fn in steps.items():
        before, _ = reset_peak()
        t0 = time.perf_counter()
        state[name] = fn()
        r = {"phase": name, "rss_before_mib": before, "peak_mib": rss_mib(True), "rss_after_mib": rss_mib(),
             "seconds": time.perf_counter() - t0}
        rows.append(r)
        overall = max(overall, r["peak_mib"])
        print(f"{name:>9}: before {before:7.0f} MiB  peak {r['peak_mib']:7.0f} MiB  after "
              f"{r['rss_after_mib']:7.0f} MiB  {r['seconds']:7.1f} s", flush=True)
    print(f"whole-process peak RSS: {overall:.0f} MiB ({overall * 2**20 / 1e9:.2f} GB); load {os.getloadavg()[0]:.1f}")
    return {"patients": n, "features": f, "modalities": m, "validation_fraction": validation_fraction, "phases": rows,
            "peak_rss_mib": overall, "loadavg": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--features", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--modalities", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--max-cells", type=float, default=8.1e8, help="skip points with more cells (memory)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--phases", action="store_true", help="peak RSS per phase of the user path (one process)")
    ap.add_argument("--validation-fraction", type=float, default=0.0, help="with --phases: fit(validation_fraction)")
    ap.add_argument("--worker", nargs=3, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phases:
        res = phases(args.patients[0], args.features[0], args.modalities[0], args.threads, args.validation_fraction)
        if args.json:
            write_json(res, args.json)
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args.epochs, args.device, args.threads)))
        return
    rows, skipped = [], []
    for m in args.modalities:
        for f in args.features:
            for n in args.patients:
                point = {"patients": n, "features": f, "modalities": m}
                if n * f * m > args.max_cells:
                    cells = n * f * m
                    skipped.append({**point, "reason": f"{cells:.1e} cells > --max-cells {args.max_cells:.1e}"
                                    f" (~{cells * 12 / 2**30:.0f} GiB of float64 frames + float32 store)"})
                    continue
                r, proc = run_child(__file__, "--worker", n, f, m, "--epochs", args.epochs,
                                    "--device", args.device, "--threads", args.threads)
                if r is None:
                    skipped.append({**point, "reason": f"failed: {proc.stderr.strip().splitlines()[-1:]}"})
                    continue
                rows.append(r)
                print(f"M={m} F={f:>6} N={n:>7}: epoch {r['epoch_s']:8.2f} s ({r['us_per_patient_epoch']:6.1f} us/patient)"
                      f"  peak RSS {r['peak_rss_mib']:7.0f} MiB  train peak increment "
                      f"{r['train_peak_increment_mib'] or float('nan'):6.0f} MiB  setup {r['setup_s']:6.1f} s",
                      flush=True)
    print(f"\n{'M':>2} {'F':>6} {'N':>7} | {'epoch s':>8} {'us/pat':>7} | {'peak RSS MiB':>12} {'train +MiB':>10}")
    for r in rows:
        print(f"{r['modalities']:>2} {r['features']:>6} {r['patients']:>7} | {r['epoch_s']:>8.2f} "
              f"{r['us_per_patient_epoch']:>7.1f} | {r['peak_rss_mib']:>12.0f} {r['train_peak_increment_mib'] or 0:>10.0f}")
    for s in skipped:
        print(f"skipped M={s['modalities']} F={s['features']} N={s['patients']}: {s['reason']}")
    if args.json:
        write_json({"rows": rows, "skipped": skipped, "loadavg": os.getloadavg()}, args.json)


if __name__ == "__main__":
    main()
