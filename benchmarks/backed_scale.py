"""Peak RSS and epoch time of a backed (on-disk) AnnData cohort larger than the tables' memory.

Writes an ``.h5ad`` of ``--patients`` x ``--features`` float32 values in row chunks (a low-rank
signal plus noise, 3 classes; never the whole matrix in memory), then in a fresh process per mode:

* ``backed``: ``anndata.read_h5ad(path, backed="r")`` -> ``MultiModalData.from_anndata`` (values
  stay on disk: ``BackedModality``) -> ``FusionModel`` (preprocessing streamed over row chunks) ->
  ``fit(max_epochs=1)`` (the tensor store is filled chunk by chunk);
* ``memory``: ``anndata.read_h5ad(path)`` (the whole matrix loaded) -> the same steps.

Reported per phase: peak RSS (``/proc/self/status`` VmHWM, benchmarks/_mem.py) and seconds. The
training tensors themselves (float32, patients x features) are resident in both modes: they are
the model's device store. Usage::

    python benchmarks/backed_scale.py --patients 50000 --features 5000 --path /tmp/backed_scale.h5ad
    python benchmarks/backed_scale.py --mode memory ...   # the in-memory comparison (needs ~3x the RAM)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def write_cohort(path: str, n: int, f: int, rank: int = 8, chunk: int = 2000, seed: int = 0) -> None:
    """Write an AnnData ``.h5ad`` (dense float32 ``X``) in chunks of ``chunk`` rows."""
    import anndata as ad
    import h5py
    import pandas as pd

    rs = np.random.RandomState(seed)
    W = rs.randn(rank, f).astype(np.float32)
    ids = [f"p{i}" for i in range(n)]
    labels = np.empty(n, dtype=object)
    meta = ad.AnnData(obs=pd.DataFrame(index=ids), var=pd.DataFrame(index=[f"g{j}" for j in range(f)]))
    meta.write_h5ad(path)
    with h5py.File(path, "a") as fh:
        if "X" in fh:
            del fh["X"]
        X = fh.create_dataset("X", shape=(n, f), dtype="float32", chunks=(min(chunk, n), min(f, 1024)))
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "array", "0.2.0"
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            z = rs.randn(k, rank).astype(np.float32)
            X[start:start + k] = z @ W + rs.randn(k, f).astype(np.float32)
            labels[start:start + k] = np.array(["A", "B", "C"])[np.digitize(z[:, 0], [-0.43, 0.43])]
    pd.DataFrame({"subtype": labels}, index=pd.Index(ids, name="sample_id")).to_csv(path + ".targets.csv")


def run(path: str, mode: str, batch_size: int) -> dict:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import anndata as ad
    import pandas as pd
    from _mem import peak_rss_mib

    import bayesfuse as bf

    out = {"mode": mode, "phases": {}}

    def phase(name, t0):
        out["phases"][name] = {"peak_rss_mib": round(peak_rss_mib(), 1), "seconds": round(time.perf_counter() - t0, 2)}

    t = time.perf_counter()
    phase("import", t)
    t = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if mode == "backed" else None)
    obs = pd.read_csv(path + ".targets.csv", index_col=0)
    data = bf.MultiModalData.from_anndata({"rna": adata}, obs=obs)
    out["shape"] = list(adata.shape)
    phase("read", t)
    t = time.perf_counter()
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16, hidden=128, device="cpu")
    phase("model (preprocessing fit)", t)
    t = time.perf_counter()
    model.fit(max_epochs=1, batch_size=batch_size, validation_fraction=0.1, progress=False, seed=0)
    phase("fit (store + 1 epoch)", t)
    out["epoch_seconds"] = round(float(model.fit_seconds_), 2)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=5_000)
    ap.add_argument("--path", default="/tmp/backed_scale.h5ad")
    ap.add_argument("--mode", choices=("backed", "memory", "both"), default="backed")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rewrite", action="store_true", help="write the cohort even if the file exists")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(run(args.path, args._child, args.batch_size)))
        return 0
    if args.rewrite or not os.path.exists(args.path):
        t = time.perf_counter()
        write_cohort(args.path, args.patients, args.features)
        print(f"wrote {args.path}: {args.patients} x {args.features} float32 "
              f"({os.path.getsize(args.path) / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s", flush=True)
    results = []
    for mode in (("backed", "memory") if args.mode == "both" else (args.mode,)):
        proc = subprocess.run([sys.executable, __file__, "--path", args.path, "--batch-size", str(args.batch_size),
                               "--_child", mode], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{mode}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"\n{mode}: {res['shape'][0]} x {res['shape'][1]}; peak RSS {res['peak_rss_mib']:.0f} MiB; "
              f"one epoch {res['epoch_seconds']:.1f} s")
        for name, p in res["phases"].items():
            print(f"  {name:28s} peak RSS {p['peak_rss_mib']:8.0f} MiB   {p['seconds']:7.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
