"""Peak RSS by phase of the user path: simulate -> FusionModel(...) -> fit (one epoch).

Runs in one process (start it fresh per measurement). Phases, each with the kernel peak
counter reset before it (``/proc/self/clear_refs``): ``simulate`` (``bf.datasets.simulate``
building the ``MultiModalData``), ``model`` (``FusionModel(...)``: preprocessing fitted on the
cohort), ``fit`` (``fit(max_epochs=1)``: device tensors + one epoch; ``--validation-fraction``, default 0).
Reported per phase: resident size before it, its peak, and the whole-process peak. Usage::

    python benchmarks/memory_phases.py --patients 100000 --features 1000 --modalities 2 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--modalities", type=int, default=2)
    ap.add_argument("--validation-fraction", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _mem import peak_rss_mib, reset_peak, rss_mib

    import bayesfuse as bf

    rows, overall = [], peak_rss_mib()

    def phase(name, fn):
        nonlocal overall
        before = rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
        peak = peak_rss_mib()
        overall = max(overall, peak)
        rows.append({"phase": name, "rss_before_mib": before, "peak_mib": peak, "rss_after_mib": rss_mib(),
                     "seconds": secs})
        print(f"{name:>9}: before {before:7.0f} MiB  peak {peak:7.0f} MiB  after {rss_mib():7.0f} MiB  "
              f"{secs:7.1f} s", flush=True)
        return out

    n, f, m = args.patients, args.features, args.modalities
    data, truth = phase("simulate", lambda: bf.datasets.simulate(
        n_patients=n, latent_dim=4, modalities={f"m{i}": ("gaussian", f) for i in range(m)},
        test_fraction=0.0, seed=0))
    model = phase("model", lambda: bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16,
                                                   hidden=128, device="cpu"))
    phase("fit", lambda: model.fit(max_epochs=1, batch_size=256, validation_fraction=args.validation_fraction,
                                   kl_warmup_epochs=1,
                                   progress=False))
    print(f"whole-process peak RSS: {overall:.0f} MiB ({overall * 2**20 / 1e9:.2f} GB); load {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"patients": n, "features": f, "modalities": m,
                       "validation_fraction": args.validation_fraction, "phases": rows, "peak_rss_mib": overall,
                       "loadavg": os.getloadavg()}, fh, indent=1)


if __name__ == "__main__":
    main()
