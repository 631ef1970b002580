"""Wall time of read + fit + predict(num_samples=500) on the shared TCGA data sets.

``tcga_gbmlgg`` subtype (leakage features dropped), + survival, ``tcga_rare6`` origin on raw counts; default
``fit``, seed 0; test accuracy checks that the timed fit learned. ::

    PYTHONPATH=. python benchmarks/end_to_end.py --threads 2 --json end_to_end.json
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, LEAKAGE, quiet, write_json  # noqa: E402


def run_case(name: str, heads: dict, num_samples: int, seed: int, max_epochs: int | None = None) -> dict:
    import bayesfuse as bf

    t0 = time.perf_counter()
    data = bf.MultiModalData.read_dir(DATA / name, drop_features=LEAKAGE.get(name))
    train, test = data.subset(split="train"), data.subset(split="test")
    t1 = time.perf_counter()
    model = bf.FusionModel(train, heads=heads, device="cpu")
    model.fit(seed=seed, progress=False, **({"max_epochs": max_epochs} if max_epochs else {}))
    t2 = time.perf_counter()
    post = model.predict(test, num_samples=num_samples, seed=seed)
    t3 = time.perf_counter()
    out = {"dataset": name, "heads": "+".join(heads), "n_train": train.n_samples, "n_test": test.n_samples,
           "features": {m: tf.n_features for m, tf in model.transforms.items()}, "epochs": len(model.history_),
           "read_s": t1 - t0, "init_fit_s": t2 - t1, "predict_s": t3 - t2, "fit_predict_s": t3 - t1, "total_s": t3 - t0}
    head = next(h for h, spec in model.heads.items() if spec.kind == "categorical")
    y = test.targets[model.heads[head].column]
    known = y.notna().to_numpy()
    out["test_accuracy"] = float(np.mean(post.predict(head).to_numpy()[known].astype(str) == y[known].astype(str)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-epochs", type=int, default=None, help="cap the fit (smoke runs); default: fit's own")
    ap.add_argument("--datasets", nargs="*", default=["tcga_gbmlgg", "tcga_rare6"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    quiet(args.threads)
    import bayesfuse as bf

    surv = bf.heads.Survival(time="time", event="event", nonpositive_times="drop")
    cases = {"tcga_gbmlgg": [{"subtype": "categorical"}, {"subtype": "categorical", "survival": surv}],
             "tcga_rare6": [{"origin": "categorical"}]}
    load0 = os.getloadavg()[0]
    results = [run_case(name, heads, args.num_samples, args.seed, args.max_epochs)
               for name in args.datasets for heads in cases[name]]
    print(f"threads={args.threads} num_samples={args.num_samples} load(1 min) at start={load0:.1f}")
    print(f"{'dataset':<12} {'heads':<22} {'n_train':>7} {'epochs':>6} {'read s':>7} {'fit s':>7} {'pred s':>7} "
          f"{'fit+pred s':>10} {'test acc':>8}")
    for r in results:
        print(f"{r['dataset']:<12} {r['heads']:<22} {r['n_train']:>7} {r['epochs']:>6} {r['read_s']:>7.2f} "
              f"{r['init_fit_s']:>7.2f} {r['predict_s']:>7.2f} {r['fit_predict_s']:>10.2f} {r['test_accuracy']:>8.3f}")
    if args.json:
        write_json({"threads": args.threads, "loadavg_start": load0, "results": results}, args.json)
    return results


if __name__ == "__main__":
    main()
