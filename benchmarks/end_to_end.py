"""Wall time of read + fit + predict(num_samples=500) on the shared TCGA data sets.

* ``tcga_gbmlgg``: subtype head (leakage features IDH1, IDH2, 1p, 19q dropped, as the README
  says), plus a survival head when ``bf.heads.Survival`` trains in this tree (otherwise the
  row says why it was skipped).
* ``tcga_rare6``: origin head on raw RNA counts (56k genes; the model keeps the 2000 most
  variable by default).

Default ``fit`` settings (early stopping on a 10% validation split), seed 0, torch threads as
given. Test-set accuracy (scikit-learn) is printed as a sanity check that the timed fit learned.
Usage::

    python benchmarks/end_to_end.py --threads 2 --json end_to_end.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

DATA = Path(os.environ.get("BAYESFUSE_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
LEAKAGE = {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}


def run_case(name: str, heads: dict, drop: dict | None, num_samples: int, seed: int) -> dict:
    import numpy as np
    from sklearn.metrics import accuracy_score

    import bayesfuse as bf

    t0 = time.perf_counter()
    data = bf.MultiModalData.read_dir(DATA / name, drop_features=drop)
    train, test = data.subset(split="train"), data.subset(split="test")
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = bf.FusionModel(train, heads=heads, device="cpu")
    model.fit(seed=seed, progress=False)
    t_fit = time.perf_counter() - t1
    t2 = time.perf_counter()
    post = model.predict(test, num_samples=num_samples, seed=seed)
    t_pred = time.perf_counter() - t2
    out = {"dataset": name, "heads": {k: (v if isinstance(v, str) else v.kind) for k, v in heads.items()},
           "n_train": train.n_samples, "n_test": test.n_samples,
           "features": {m: tf.n_features for m, tf in model.transforms.items()},
           "epochs": len(model.history_), "best_epoch": int(model.best_epoch_),
           "read_s": t_read, "init_fit_s": t_fit, "predict_s": t_pred, "fit_predict_s": t_fit + t_pred,
           "total_s": t_read + t_fit + t_pred}
    for h, spec in model.heads.items():
        if spec.kind == "categorical":
            y = test.targets[spec.column]
            known = y.notna().to_numpy()
            pred = post.predict(h).to_numpy()
            out[f"{h}_test_accuracy"] = float(accuracy_score(y[known].astype(str), np.asarray(pred[known], str)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import bayesfuse as bf

    warnings.simplefilter("ignore")
    cases = [("tcga_gbmlgg", {"subtype": "categorical"}, LEAKAGE)]
    surv_note = None
    try:
        cases.append(("tcga_gbmlgg", {"subtype": "categorical",
                                      "survival": bf.heads.Survival(time="time", event="event",
                                                                    nonpositive_times="drop")}, LEAKAGE))
    except Exception as exc:  # noqa: BLE001
        surv_note = f"survival head unavailable: {exc!r}"
    cases.append(("tcga_rare6", {"origin": "categorical"}, None))
    results = []
    load0 = os.getloadavg()[0]
    for name, heads, drop in cases:
        try:
            results.append(run_case(name, heads, drop, args.num_samples, args.seed))
        except Exception as exc:  # noqa: BLE001
            if "survival" in heads:
                surv_note = f"survival head did not train in this tree: {type(exc).__name__}: {exc}"
                continue
            raise
    print(f"threads={args.threads} num_samples={args.num_samples} load(1 min) at start={load0:.1f}")
    print(f"{'dataset':<12} {'heads':<22} {'n_train':>7} {'epochs':>6} {'read s':>7} {'fit s':>7} {'pred s':>7} "
          f"{'fit+pred s':>10} {'test acc':>8}")
    for r in results:
        acc = next((v for k, v in r.items() if k.endswith("_test_accuracy")), float("nan"))
        print(f"{r['dataset']:<12} {'+'.join(r['heads']):<22} {r['n_train']:>7} {r['epochs']:>6} {r['read_s']:>7.2f} "
              f"{r['init_fit_s']:>7.2f} {r['predict_s']:>7.2f} {r['fit_predict_s']:>10.2f} {acc:>8.3f}")
    if surv_note:
        print(surv_note)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "loadavg_start": load0, "results": results,
                       "survival_note": surv_note}, fh, indent=1)


if __name__ == "__main__":
    main()
