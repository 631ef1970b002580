"""Peak RSS and epoch time of a backed (on-disk) AnnData cohort larger than the tables' memory.

Writes ``{path}_m*.h5ad`` + ``{path}.targets.csv`` in row chunks, then per ``--mode`` in a fresh process reads
them (``backed``: on disk; ``memory``: loaded), builds ``FusionModel``, fits one epoch: peak RSS and seconds
per phase (docs/benchmarks.md, section 3). Usage::

    python benchmarks/backed_scale.py --patients 100000 --modalities 2 --features 10000 --path /tmp/bs --delete
    python benchmarks/backed_scale.py --mode memory ...   # the in-memory comparison (needs ~3x the RAM)
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, rss_mib, run_child, write_json  # noqa: E402


def files(path: str, modalities: int) -> list[str]:
    return [f"{path}_m{i}.h5ad" for i in range(modalities)]


def write_cohort(path: str, n: int, f: int, modalities: int = 2, rank: int = 8, chunk: int = 2000,
                 seed: int = 0) -> None:
    """Write ``modalities`` AnnData ``.h5ad`` files (dense float32 ``X``) in chunks of ``chunk`` rows."""
    import anndata as ad
    import h5py
    import pandas as pd

    rs = np.random.RandomState(seed)
    Ws = [rs.randn(rank, f).astype(np.float32) for _ in range(modalities)]
    ids = [f"p{i}" for i in range(n)]
    labels = np.empty(n, dtype=object)
    handles = []
    for fn in files(path, modalities):
        ad.AnnData(obs=pd.DataFrame(index=ids), var=pd.DataFrame(index=[f"g{j}" for j in range(f)])).write_h5ad(fn)
        fh = h5py.File(fn, "a")
        if "X" in fh:
            del fh["X"]
        X = fh.create_dataset("X", shape=(n, f), dtype="float32", chunks=(min(chunk, n), min(f, 1024)))
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "array", "0.2.0"
        handles.append((fh, X))
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        z = rs.randn(k, rank).astype(np.float32)
        for (_, X), W in zip(handles, Ws):
            X[start:start + k] = z @ W + rs.randn(k, f).astype(np.float32)
        labels[start:start + k] = np.array(["A", "B", "C"])[np.digitize(z[:, 0], [-0.43, 0.43])]
    for fh, _ in handles:
        fh.close()
    pd.DataFrame({"subtype": labels}, index=pd.Index(ids, name="sample_id")).to_csv(path + ".targets.csv")


def run(path: str, mode: str, batch_size: int, modalities: int) -> dict:
    quiet()
    import anndata as ad
    import pandas as pd

    import bayesfuse as bf

    out = {"mode": mode, "phases": {}}

    clock = [time.perf_counter()]

    def phase(name):   # peak RSS so far and the seconds since the previous phase
        t = time.perf_counter()
        out["phases"][name] = {"peak_rss_mib": round(rss_mib(True), 1), "seconds": round(t - clock[0], 2)}
        clock[0] = t

    phase("import")
    adatas = {f"m{i}": ad.read_h5ad(fn, backed="r" if mode == "backed" else None)
              for i, fn in enumerate(files(path, modalities))}
    obs = pd.read_csv(path + ".targets.csv", index_col=0)
    data = bf.MultiModalData.from_anndata(adatas, obs=obs)
    out["shape"] = [adatas["m0"].shape[0], len(adatas), adatas["m0"].shape[1]]
    phase("read")
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16, hidden=128, device="cpu")
    out["model_features"] = {m: tf.n_features for m, tf in model.transforms.items()}
    phase("model (preprocessing fit)")
    model.fit(max_epochs=1, batch_size=batch_size, validation_fraction=0.1, progress=False, seed=0)
    phase("fit (store + 1 epoch)")
    out["epoch_seconds"] = round(float(model.fit_seconds_), 2)
    out["peak_rss_mib"] = round(rss_mib(peak=True), 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=5_000)
    ap.add_argument("--modalities", type=int, default=2)
    ap.add_argument("--path", default="/tmp/backed_scale", help="file prefix (see above)")
    ap.add_argument("--mode", choices=("backed", "memory", "both"), default="backed")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rewrite", action="store_true", help="write the cohort even if the file exists")
    ap.add_argument("--delete", action="store_true", help="delete the files afterwards")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(run(args.path, args._child, args.batch_size, args.modalities)))
        return 0
    paths = files(args.path, args.modalities)
    if args.rewrite or not all(map(os.path.exists, paths)):
        t = time.perf_counter()
        write_cohort(args.path, args.patients, args.features, args.modalities)
        print(f"wrote {args.path}_m*.h5ad: {args.patients} x {args.modalities} x {args.features} float32 "
              f"({sum(map(os.path.getsize, paths)) / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s", flush=True)
    results = []
    for mode in (("backed", "memory") if args.mode == "both" else (args.mode,)):
        res, proc = run_child(__file__, "--path", args.path, "--batch-size", args.batch_size,
                              "--modalities", args.modalities, "--_child", mode)
        if res is None:
            print(f"{mode}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        results.append(res)
        print(f"\n{mode}: {' x '.join(map(str, res['shape']))}; peak RSS {res['peak_rss_mib']:.0f} MiB; "
              f"one epoch {res['epoch_seconds']:.1f} s")
        for name, p in res["phases"].items():
            print(f"  {name:28s} peak RSS {p['peak_rss_mib']:8.0f} MiB   {p['seconds']:7.1f} s")
    if args.json:
        write_json(results, args.json)
    if args.delete:
        for fn in [*paths, args.path + ".targets.csv"]:
            os.remove(fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
