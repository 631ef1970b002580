"""Imputation and missing-modality benchmark (prints tables; optional JSON).

Each test modality hidden in turn, imputed by bayesfuse and by baselines (train mean, KNN, iterative imputer),
then subtype metrics with each hidden, per ``modality_dropout`` and seed (docs/benchmarks.md). ::

    PYTHONPATH=. python benchmarks/imputation.py --dataset tcga_gbmlgg --dropouts 0.25 --seeds 0 1 2 --recalibrate
    PYTHONPATH=. python benchmarks/imputation.py --dataset cll --json cll.json
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, LEAKAGE, quiet, write_json  # noqa: E402

import bayesfuse as bf  # noqa: E402
from bayesfuse import metrics as M  # noqa: E402
from bayesfuse.data.preprocessing import ModalityTransform  # noqa: E402
from bayesfuse.evaluation import evaluate_imputation  # noqa: E402

IMPUTE = {"tcga_gbmlgg": ["protein", "cnv_arm", "mutation", "cnv_gene", "clinical"], "cll": ["drugs", "mutations"]}


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
    x_tr, x_te = _matrix(train, features), _matrix(test_h, features)
    mu, sd = np.nanmean(x_tr, axis=0), np.nanstd(x_tr, axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    keep = np.isfinite(mu)
    names = list(features)
    start = sum(len(features[m]) for m in names[:names.index(modality)])
    cols = slice(start, start + len(features[modality]))
    truth = held[features[modality]].to_numpy(dtype=np.float64)
    rows = []
    # Train mean; its predictive interval is the train marginal (per-feature quantiles).
    tr_m = x_tr[:, cols]
    mean = np.broadcast_to(np.nanmean(tr_m, axis=0), truth.shape)
    obs = np.isfinite(truth)
    q = np.nanquantile(tr_m, [0.25, 0.75, 0.05, 0.95], axis=0)
    pm = M.imputation_metrics(truth, np.stack([mean, mean]))
    binary = bool(np.all(np.isin(truth[obs], (0.0, 1.0))))
    bx = _binary(truth, mean) if binary else {}
    rows.append({"method": "train-mean", "pearson_r": float("nan"), "rmse": pm.rmse, **bx,
                 "coverage_50": float((((truth >= q[0]) & (truth <= q[1])) & obs).sum() / obs.sum()),
                 "coverage_90": float((((truth >= q[2]) & (truth <= q[3])) & obs).sum() / obs.sum()),
                 "seconds": 0.0})
    z_tr, z_te = ((x_tr - mu) / sd)[:, keep], ((x_te - mu) / sd)[:, keep]
    pos = np.searchsorted(np.flatnonzero(keep), np.arange(cols.start, cols.stop))
    for name, imp in (("KNNImputer(k=10)", KNNImputer(n_neighbors=10)),
                      ("IterativeImputer", IterativeImputer(max_iter=10, random_state=seed,
                                                            n_nearest_features=100))):
        t0 = time.perf_counter()   # warnings: off (quiet())
        pred = imp.fit(z_tr).transform(z_te)[:, pos] * sd[cols] + mu[cols]
        pm = M.imputation_metrics(truth, np.stack([pred, pred]))
        bx = _binary(truth, np.clip(pred, 0.0, 1.0)) if binary else {}
        rows.append({"method": name, "pearson_r": pm.pearson_r, "rmse": pm.rmse, **bx, "coverage_50": float("nan"),
                     "coverage_90": float("nan"), "seconds": time.perf_counter() - t0})
    return rows


def _binary(truth: np.ndarray, prob: np.ndarray) -> dict:
    """AUROC (median over features with >= 3 ones), Brier, log loss of a 0/1 imputation."""
    b = M.binary_imputation_metrics(truth, prob)
    return {"auroc": b.auroc, "brier": b.brier, "log_loss": b.log_loss}


def subtype_metrics(model: bf.FusionModel, test: bf.MultiModalData, head: str = "subtype") -> list[dict]:
    """Subtype metrics with all modalities and with each modality hidden in turn."""
    y_all = test.targets[head]
    known = y_all.notna().to_numpy()
    rows = []
    for hidden in [None, *model.modalities]:
        d = test if hidden is None else test.drop_modalities([hidden])
        post = model.predict(d, num_samples=200, seed=0)   # NoModalityWarning: off (quiet())
        draws = post.probs(head)[:, known]
        probs = draws.mean(axis=0)
        y = M.encode_labels(y_all[known].to_numpy(), post.classes(head))
        cons = M.ece_consistency(probs, y, n_resamples=2000, seed=0)
        rows.append({"hidden": hidden or "(none)", "accuracy": M.accuracy(probs, y), "nll": M.nll(probs, y),
                     "ece": M.ece(probs, y), "ece_null_mean": cons.null_mean, "ece_p": cons.p_value,
                     "mean_top_prob": float(probs.max(1).mean()),
                     "mean_entropy": float(M.predictive_entropy(draws).mean()), "n": int(known.sum())})
    return rows


def _line(tag: str, m: str, row: dict) -> str:
    extra = f"  auroc {row['auroc']:.3f}  brier {row['brier']:.4f}" if "auroc" in row else ""
    return (f"   {tag} {m:>10}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  cov50 {row['coverage_50']:.3f}  "
            f"cov90 {row['coverage_90']:.3f}{extra}")


def run(dataset: str, dropouts: list[float], seeds: list[int], num_samples: int = 200, latent_dim: int = 16,
        with_baselines: bool = True, recalibrate: str | None = None, fit_kwargs: dict | None = None) -> dict:
    data = bf.MultiModalData.read_dir(DATA / dataset, drop_features=LEAKAGE[dataset])
    train, test = data.subset(split="train"), data.subset(split="test")
    print(f"\n=== {dataset}: train {train.n_samples}, test {test.n_samples}; {dict(data.missingness_patterns())}")
    results: dict = {"dataset": dataset, "bayesfuse": [], "downstream": [], "baselines": []}
    # The model's features (same fit as FusionModel.__init__) so baselines score the same columns.
    features = {m: ModalityTransform.fit(m, train.modality(m)).features for m in train.modality_names}
    for m in IMPUTE[dataset] if with_baselines else ():
        for row in baselines(train, test, m, features, seed=0):
            results["baselines"].append({"modality": m, **row})
            print(_line(f"baseline {row['method']:>18}", m, row) + f"  ({row['seconds']:.1f}s)", flush=True)
    for p, seed in itertools.product(dropouts, seeds):
        model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=latent_dim)
        model.fit(seed=seed, modality_dropout=p, progress=False, **(fit_kwargs or {}))
        assert features == {m: tf.features for m, tf in model.transforms.items()}
        print(f"-- modality_dropout={p} seed={seed}: {model.fit_seconds_:.1f}s, best epoch {model.best_epoch_}")
        gauss = [m for m in IMPUTE[dataset] if model.transforms[m].likelihood == "gaussian"]
        for recal in (False, True) if recalibrate else (False,):
            if recal:   # fitted on the model's own early-stopping patients (no gradient step on them)
                recs = model.calibrate_imputation(modalities=gauss, mode=recalibrate, seed=seed)
            for m in gauss if recal else IMPUTE[dataset]:
                ev = evaluate_imputation(model, test, m, num_samples=num_samples, seed=seed)
                row = {"dropout": p, "seed": seed, "recalibrated": recal, **ev.as_row()}
                if recal:
                    row.update(slope=float(np.median(recs[m].slope)), recal_mode=recs[m].mode)
                results["bayesfuse"].append(row)
                print(_line("recal " if recal else "impute", m, row)
                      + (f"  ({recs[m].mode}, slope median {row['slope']:.3f})" if recal else ""), flush=True)
        for row in subtype_metrics(model, test):
            results["downstream"].append({"dropout": p, "seed": seed, **row})
    pd.set_option("display.width", 200)
    bfr = pd.DataFrame(results["bayesfuse"])
    cols = [c for c in ("pearson_r", "rmse", "coverage_50", "coverage_90", "auroc", "brier") if c in bfr]
    print("\nbayesfuse imputation (mean over seeds):")
    print(bfr.groupby(["modality", "dropout", "recalibrated"])[cols].agg(["mean", "min", "max"]).round(3).to_string())
    if results["baselines"]:
        print("\nbaselines:")
        print(pd.DataFrame(results["baselines"]).set_index(["modality", "method"]).round(3).to_string())
    print("\ndownstream subtype (mean over seeds):")
    print(pd.DataFrame(results["downstream"]).groupby(["dropout", "hidden"], sort=False)[
        ["accuracy", "nll", "ece", "ece_null_mean", "ece_p", "mean_top_prob", "mean_entropy"]].mean().round(3).to_string())
    return results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="tcga_gbmlgg", choices=sorted(IMPUTE))
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=None, help="cap the fit (smoke runs); default: fit's own")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--recalibrate", nargs="?", const="global", default=None, choices=["global", "feature", "auto", "none"],
                    help="also score Gaussian modalities after FusionModel.calibrate_imputation (slope mode; default global)")
    args = ap.parse_args(argv)
    quiet()
    res = run(args.dataset, args.dropouts, args.seeds, args.num_samples, args.latent_dim, not args.no_baselines,
              args.recalibrate, None if args.max_epochs is None else {"max_epochs": args.max_epochs})
    if args.json:
        write_json(res, args.json)
    return res


if __name__ == "__main__":
    main()
