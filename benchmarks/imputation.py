"""Imputation and missing-modality benchmark (prints tables; optional JSON).

For each dataset: train on the train split, then on the test split

* hide one modality at a time for the test patients, impute it with bayesfuse
  (:func:`bayesfuse.evaluation.evaluate_imputation`) and with baselines fitted on the same
  training patients (train-mean fill with the train marginal as predictive interval,
  scikit-learn ``KNNImputer`` and ``IterativeImputer`` on the concatenated standardised
  features); score per-feature Pearson r / RMSE (medians over features) and interval coverage;
* downstream: subtype accuracy, NLL, top-label ECE and mean predictive entropy with all
  modalities and with each modality hidden in turn;
* repeat the bayesfuse fit for several ``modality_dropout`` values and seeds.

Usage::

    PYTHONPATH=. python benchmarks/imputation.py --dataset tcga_gbmlgg --dropouts 0 0.25 0.5 --seeds 0 1
    PYTHONPATH=. python benchmarks/imputation.py --dataset cll --json cll.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_imputation
from bayesfuse.metrics import accuracy, ece, encode_labels, imputation_metrics, nll, predictive_entropy

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CONFIG = {
    "tcga_gbmlgg": {"drop": {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]},
                    "impute": ["protein", "cnv_arm", "mutation", "cnv_gene", "clinical"]},
    "cll": {"drop": {"mutations": ["IGHV"]}, "impute": ["drugs", "mutations"]},
}


# ------------------------------------------------------------------ baselines
def _matrix(data: bf.MultiModalData, features: dict[str, list[str]]) -> np.ndarray:
    """Concatenated raw features (n, sum F), NaN where a modality is absent or a cell missing."""
    ids = pd.Index(data.sample_ids)
    blocks = []
    for m, cols in features.items():
        block = pd.DataFrame(np.nan, index=ids, columns=cols)
        if m in data.modality_names:
            df = data.modality(m)
            block.loc[df.index, cols] = df[cols].to_numpy()
        blocks.append(block.to_numpy(dtype=np.float64))
    return np.concatenate(blocks, axis=1)


def baselines(train: bf.MultiModalData, test: bf.MultiModalData, modality: str, features: dict[str, list[str]],
              seed: int = 0) -> list[dict]:
    """Train-mean, KNNImputer and IterativeImputer for ``modality`` hidden in the test patients."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    held = test.modality(modality)
    test_h = test.subset(ids=held.index).drop_modalities([modality])
    x_tr = _matrix(train, features)
    x_te = _matrix(test_h, features)
    mu, sd = np.nanmean(x_tr, axis=0), np.nanstd(x_tr, axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    keep = np.isfinite(mu)
    start = 0
    sl = {}
    for m, cols in features.items():
        sl[m] = slice(start, start + len(cols))
        start += len(cols)
    cols = sl[modality]
    truth = held[features[modality]].to_numpy(dtype=np.float64)
    rows = []
    # Train mean; its predictive interval is the train marginal (per-feature quantiles).
    tr_m = x_tr[:, cols]
    mean = np.broadcast_to(np.nanmean(tr_m, axis=0), truth.shape)
    obs = np.isfinite(truth)
    q = np.nanquantile(tr_m, [0.25, 0.75, 0.05, 0.95], axis=0)
    pm = imputation_metrics(truth, np.stack([mean, mean]))
    rows.append({"method": "train-mean", "pearson_r": float("nan"), "rmse": pm.rmse,
                 "coverage_50": float((((truth >= q[0]) & (truth <= q[1])) & obs).sum() / obs.sum()),
                 "coverage_90": float((((truth >= q[2]) & (truth <= q[3])) & obs).sum() / obs.sum()),
                 "seconds": 0.0})
    z_tr = ((x_tr - mu) / sd)[:, keep]
    z_te = ((x_te - mu) / sd)[:, keep]
    col_idx = np.flatnonzero(keep)
    pos = np.searchsorted(col_idx, np.arange(cols.start, cols.stop))
    for name, imp in (("KNNImputer(k=10)", KNNImputer(n_neighbors=10)),
                      ("IterativeImputer", IterativeImputer(max_iter=10, random_state=seed,
                                                            n_nearest_features=100))):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp.fit(z_tr)
            out = imp.transform(z_te)
        pred = out[:, pos] * sd[cols] + mu[cols]
        pm = imputation_metrics(truth, np.stack([pred, pred]))
        rows.append({"method": name, "pearson_r": pm.pearson_r, "rmse": pm.rmse, "coverage_50": float("nan"),
                     "coverage_90": float("nan"), "seconds": time.perf_counter() - t0})
    return rows


# ----------------------------------------------------------------- downstream
def subtype_metrics(model: bf.FusionModel, test: bf.MultiModalData, head: str = "subtype") -> list[dict]:
    """Subtype metrics with all modalities and with each modality hidden in turn."""
    y_all = test.targets[head]
    known = y_all.notna().to_numpy()
    rows = []
    for hidden in [None, *model.modalities]:
        d = test if hidden is None else test.drop_modalities([hidden])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bf.exceptions.NoModalityWarning)
            post = model.predict(d, num_samples=200, seed=0)
        draws = post.probs(head)[:, known]
        probs = draws.mean(axis=0)
        y = encode_labels(y_all[known].to_numpy(), post.classes(head))
        rows.append({"hidden": hidden or "(none)", "accuracy": accuracy(probs, y), "nll": nll(probs, y),
                     "ece": ece(probs, y), "mean_entropy": float(predictive_entropy(draws).mean()),
                     "n": int(known.sum())})
    return rows


# ----------------------------------------------------------------------- main
def load(name: str) -> bf.MultiModalData:
    return bf.MultiModalData.read_dir(DATA / name, drop_features=CONFIG[name]["drop"])


def run(dataset: str, dropouts: list[float], seeds: list[int], num_samples: int, latent_dim: int,
        with_baselines: bool = True) -> dict:
    data = load(dataset)
    train, test = data.subset(split="train"), data.subset(split="test")
    print(f"\n=== {dataset}: train {train.n_samples}, test {test.n_samples}; "
          f"{dict(data.missingness_patterns())}")
    results: dict = {"dataset": dataset, "bayesfuse": [], "downstream": [], "baselines": []}
    from bayesfuse.data.preprocessing import ModalityTransform

    # The model's features (same fit as FusionModel.__init__) so baselines score the same columns.
    features = {m: ModalityTransform.fit(m, train.modality(m)).features for m in train.modality_names}
    if with_baselines:
        for m in CONFIG[dataset]["impute"]:
            for row in baselines(train, test, m, features, seed=0):
                results["baselines"].append({"modality": m, **row})
                print(f"   baseline {m:>10} {row['method']:>18}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  "
                      f"cov90 {row['coverage_90']:.3f}  ({row['seconds']:.1f}s)", flush=True)
    for p in dropouts:
        for seed in seeds:
            model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=latent_dim)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(seed=seed, modality_dropout=p, progress=False)
            assert features == {m: tf.features for m, tf in model.transforms.items()}
            print(f"-- modality_dropout={p} seed={seed}: {model.fit_seconds_:.1f}s, best epoch {model.best_epoch_}, "
                  f"n_train {model.train_config_['n_train']} + val {model.train_config_['n_validation']}")
            for m in CONFIG[dataset]["impute"]:
                t0 = time.perf_counter()
                ev = evaluate_imputation(model, test, m, num_samples=num_samples, seed=seed)
                row = {"dropout": p, "seed": seed, **ev.as_row(), "seconds": time.perf_counter() - t0}
                results["bayesfuse"].append(row)
                print(f"   impute {m:>10}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  "
                      f"cov50 {row['coverage_50']:.3f}  cov90 {row['coverage_90']:.3f}", flush=True)
            for row in subtype_metrics(model, test):
                results["downstream"].append({"dropout": p, "seed": seed, **row})
                print(f"   subtype hidden {row['hidden']:>10}: acc {row['accuracy']:.3f}  nll {row['nll']:.3f}  "
                      f"ece {row['ece']:.3f}  H {row['mean_entropy']:.3f}", flush=True)
    _print(results)
    return results


def _print(results: dict) -> None:
    pd.set_option("display.width", 200)
    bfr = pd.DataFrame(results["bayesfuse"])
    agg = bfr.groupby(["modality", "dropout"])[["pearson_r", "rmse", "coverage_50", "coverage_90"]].mean()
    print("\nbayesfuse imputation (mean over seeds):")
    print(agg.round(3).to_string())
    if results["baselines"]:
        print("\nbaselines:")
        print(pd.DataFrame(results["baselines"]).set_index(["modality", "method"]).round(3).to_string())
    ds = pd.DataFrame(results["downstream"])
    print("\ndownstream subtype (mean over seeds):")
    print(ds.groupby(["dropout", "hidden"], sort=False)[["accuracy", "nll", "ece", "mean_entropy"]].mean()
          .round(3).to_string())


def main() -> None:
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # numpy / scikit-learn BLAS: one thread on the shared machine
    except ImportError:
        pass
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="tcga_gbmlgg", choices=sorted(CONFIG))
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    res = run(args.dataset, args.dropouts, args.seeds, args.num_samples, args.latent_dim, not args.no_baselines)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
