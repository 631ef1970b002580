"""Time per epoch and peak memory versus patients, features per modality and modalities.

Each grid point runs in a fresh subprocess on simulated data (``bf.datasets.simulate``,
Gaussian modalities, one categorical head, latent 16, hidden 128, batch 256, no validation
split). Reported per point: setup time (simulate + FusionModel + device tensors), the time of
one training epoch (median of ``--epochs`` epochs after one warm-up epoch is not possible
without early stopping logic, so: wall time of ``--epochs`` epochs / epochs), peak RSS of the
whole process, and the peak RSS *increment during training* over the resident size before it
(kernel peak counter reset with /proc/self/clear_refs): the latter is flat in patients when
minibatches are streamed. On CUDA the peak allocated device memory is reported as well.

The simulator's float64 frames are shared with MultiModalData (8 bytes per cell, no copy) and
the device store holds float32 values (4 bytes per cell for a Gaussian modality, whose observed
values and encoder input share one tensor): grid points above ``--max-cells`` total cells
(patients x features x modalities) are skipped and listed.
``--phases`` instead reports, in this process, the peak RSS of each phase of the public user path at the first
``--patients`` / ``--features`` / ``--modalities`` values: ``simulate`` (building the ``MultiModalData``), ``model``
(``FusionModel(...)``: preprocessing fitted), ``fit`` (``fit(max_epochs=1)``: device tensors + one epoch), each with the
kernel peak counter reset before it. Usage::

    python benchmarks/scaling.py --json scaling.json
    python benchmarks/scaling.py --patients 1000 10000 100000 --features 1000 --modalities 2
    python benchmarks/scaling.py --phases --patients 100000 --features 1000 --modalities 2 --json memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(n: int, f: int, m: int, epochs: int, device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import warnings

    warnings.simplefilter("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _mem import peak_rss_mib, reset_peak, rss_mib

    import bayesfuse as bf
    from bayesfuse._settings import seed_everything
    from bayesfuse.train.svi import TrainConfig, train_svi

    t0 = time.perf_counter()
    data, _ = bf.datasets.simulate(n_patients=n, latent_dim=4, modalities={f"m{i}": ("gaussian", f) for i in range(m)},
                                   test_fraction=0.0, seed=0)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16, hidden=128, device=device)
    store = model._store(data, strict_targets=True)
    del data, model._train_data
    module = model._build_module()
    setup_s = time.perf_counter() - t0
    setup_peak = peak_rss_mib()
    import gc

    gc.collect()
    base = rss_mib()
    reset_ok = reset_peak()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(max_epochs=epochs, batch_size=256, kl_warmup_epochs=1, progress=False)
    res = train_svi(module, store, None, cfg, seed_everything(0))
    secs = res.history["seconds"].to_numpy()
    per_epoch = float(secs[-1] / len(secs)) if len(secs) else float("nan")
    out = {"patients": n, "features": f, "modalities": m, "device": device, "threads": threads,
           "setup_s": setup_s, "epoch_s": per_epoch, "epochs": len(secs),
           "us_per_patient_epoch": 1e6 * per_epoch / n, "peak_rss_mib": max(setup_peak, peak_rss_mib()),
           "rss_before_train_mib": base, "train_peak_increment_mib": (peak_rss_mib() - base) if reset_ok else None}
    if device.startswith("cuda"):
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def phases(n: int, f: int, m: int, threads: int, validation_fraction: float) -> dict:
    """Peak RSS and seconds of simulate -> FusionModel -> fit(max_epochs=1), the peak counter reset per phase."""
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _mem import peak_rss_mib, reset_peak, rss_mib

    import bayesfuse as bf

    rows, state = [], {}
    steps = {"simulate": lambda: bf.datasets.simulate(n_patients=n, latent_dim=4, test_fraction=0.0, seed=0,
                                                      modalities={f"m{i}": ("gaussian", f) for i in range(m)})[0],
             "model": lambda: bf.FusionModel(state["simulate"], heads={"subtype": "categorical"}, latent_dim=16,
                                             hidden=128, device="cpu"),
             "fit": lambda: state["model"].fit(max_epochs=1, batch_size=256, validation_fraction=validation_fraction,
                                               kl_warmup_epochs=1, progress=False)}
    overall = peak_rss_mib()
    for name, fn in steps.items():
        before = rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        state[name] = fn()
        rows.append({"phase": name, "rss_before_mib": before, "peak_mib": peak_rss_mib(), "rss_after_mib": rss_mib(),
                     "seconds": time.perf_counter() - t0})
        overall = max(overall, rows[-1]["peak_mib"])
        print(f"{name:>9}: before {before:7.0f} MiB  peak {rows[-1]['peak_mib']:7.0f} MiB  after "
              f"{rows[-1]['rss_after_mib']:7.0f} MiB  {rows[-1]['seconds']:7.1f} s", flush=True)
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
            with open(args.json, "w") as fh:
                json.dump(res, fh, indent=1)
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args.epochs, args.device, args.threads)))
        return
    rows, skipped = [], []
    for m in args.modalities:
        for f in args.features:
            for n in args.patients:
                if n * f * m > args.max_cells:
                    skipped.append({"patients": n, "features": f, "modalities": m,
                                    "reason": f"{n * f * m:.1e} cells > --max-cells {args.max_cells:.1e} "
                                              f"(~{n * f * m * 12 / 2**30:.0f} GiB of float64 frames + float32 store)"})
                    continue
                out = subprocess.run([sys.executable, __file__, "--worker", str(n), str(f), str(m), "--epochs",
                                      str(args.epochs), "--device", args.device, "--threads", str(args.threads)],
                                     capture_output=True, text=True)
                if out.returncode:
                    skipped.append({"patients": n, "features": f, "modalities": m,
                                    "reason": f"failed: {out.stderr.strip().splitlines()[-1:]}"})
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
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
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "skipped": skipped, "loadavg": os.getloadavg()}, fh, indent=1)


if __name__ == "__main__":
    main()
