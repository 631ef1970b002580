"""Imputation benchmark as it was while the imputation defaults were studied (was benchmarks/imputation.py).

Keeps the study options (MOFA+, dropout modes, temperature scaling, --select); the release benchmark is
benchmarks/imputation.py.

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

    PYTHONPATH=. python studies/imputation_options/imputation.py --dataset tcga_gbmlgg --dropouts 0 0.25 0.5 --seeds 0 1
    PYTHONPATH=. python studies/imputation_options/imputation.py --dataset cll --json cll.json
    PYTHONPATH=. python studies/imputation_options/imputation.py --dropouts 0.25 --seeds 0 1 2 --recalibrate   # + recalibrated rows
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_imputation
from bayesfuse.metrics import (
    accuracy,
    ece,
    ece_consistency,
    encode_labels,
    imputation_metrics,
    nll,
    predictive_entropy,
)


def _bench_imputation():
    """benchmarks/imputation.py under its own module name (this study's file has the same name)."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))              # for its ``_common`` import
    spec = importlib.util.spec_from_file_location("bench_imputation", bench / "imputation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the release benchmark's baselines: one definition for the benchmark and this study
_bench = _bench_imputation()
_binary, _matrix, baselines = _bench._binary, _bench._matrix, _bench.baselines

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CONFIG = {
    "tcga_gbmlgg": {"drop": {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]},
                    "impute": ["protein", "cnv_arm", "mutation", "cnv_gene", "clinical"]},
    "cll": {"drop": {"mutations": ["IGHV"]}, "impute": ["drugs", "mutations"]},
}


# ------------------------------------------------------------------ baselines
def mofa_baseline(train: bf.MultiModalData, test: bf.MultiModalData, modality: str,
                  features: dict[str, list[str]], factors: int = 15, seed: int = 0) -> dict | None:
    """MOFA+ (mofapy2, optional): one transductive fit on train + test with ``modality`` hidden in test.

    Views = modalities (Gaussian likelihood on the standardised features, as for the other
    baselines); the imputation is the MOFA+ reconstruction ``Z W^T`` of the hidden cells.
    Returns None when mofapy2 is not installed.
    """
    try:
        from mofapy2.run.entry_point import entry_point
    except ImportError:
        return None
    import contextlib
    import io

    held = test.modality(modality)
    test_h = test.subset(ids=held.index).drop_modalities([modality])
    x_tr, x_te = _matrix(train, features), _matrix(test_h, features)
    mu, sd = np.nanmean(x_tr, axis=0), np.nanstd(x_tr, axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    x = (np.concatenate([x_tr, x_te]) - mu) / sd
    views, names, start = [], [], 0
    for m, cols in features.items():
        views.append([x[:, start:start + len(cols)]])
        names.append(m)
        start += len(cols)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ent = entry_point()
        ent.set_data_options(scale_views=False, center_groups=False)
        ent.set_data_matrix(views, views_names=names, likelihoods=["gaussian"] * len(views))
        ent.set_model_options(factors=factors, spikeslab_weights=True, ard_weights=True)
        ent.set_train_options(iter=500, convergence_mode="fast", seed=seed, verbose=False, quiet=True)
        ent.build()
        ent.run()
    exp = ent.model.getExpectations()
    z = exp["Z"]["E"]
    k = names.index(modality)
    w = exp["W"][k]["E"]
    pred = (z @ w.T)[len(x_tr):]
    cols = slice(sum(len(features[m]) for m in names[:k]), sum(len(features[m]) for m in names[:k + 1]))
    pred = pred * sd[cols] + mu[cols]
    truth = held[features[modality]].to_numpy(dtype=np.float64)
    pm = imputation_metrics(truth, np.stack([pred, pred]))
    obs = np.isfinite(truth)
    bx = _binary(truth, np.clip(pred, 0, 1)) if np.all(np.isin(truth[obs], (0.0, 1.0))) else {}
    return {"method": f"MOFA+({factors})", "pearson_r": pm.pearson_r, "rmse": pm.rmse, **bx,
            "coverage_50": float("nan"), "coverage_90": float("nan"), "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------- downstream
def validation_temperature(model: bf.FusionModel, train: bf.MultiModalData, seed: int, head: str = "subtype",
                           patterns: bool = False):
    """``TemperatureScaler`` fitted on the model's own early-stopping patients.

    These patients took no gradient step (``fit(validation_fraction=0.1)`` picks them with the
    same seed), so the test split stays untouched. ``patterns=False``: predicted with all their
    modalities. ``patterns=True``: one pooled tuning set of the same patients predicted with all
    modalities and with each modality hidden in turn (patients left with no modality skipped),
    so the temperature fits the missingness patterns it is evaluated on.
    """
    from bayesfuse.calibration import TemperatureScaler

    ids = train.sample_ids[train.presence.to_numpy().any(axis=1)]
    _, val = model._validation_split(ids, train, model.train_config_["validation_fraction"], seed)
    labels = train.targets[head].reindex(val)
    tune = train.subset(ids=labels.index[labels.notna().to_numpy()])  # calibration needs known labels
    posts = [model.predict(tune, num_samples=200, seed=0)]
    if patterns:
        for m in model.modalities:
            d = tune.drop_modalities([m])
            keep = d.sample_ids[d.presence.to_numpy().any(axis=1)]
            if len(keep):
                posts.append(model.predict(d.subset(ids=keep), num_samples=200, seed=0))
    return TemperatureScaler().fit(posts, tune.targets[head], head)


def subtype_metrics(model: bf.FusionModel, test: bf.MultiModalData, head: str = "subtype",
                    scalers: dict | None = None) -> list[dict]:
    """Subtype metrics with all modalities and with each modality hidden in turn.

    With ``scalers`` ({name: fitted ``TemperatureScaler``}) every row is repeated after each
    temperature scaling (``calibrated=name``; ``False`` = raw).
    """
    y_all = test.targets[head]
    known = y_all.notna().to_numpy()
    rows = []
    for hidden in [None, *model.modalities]:
        d = test if hidden is None else test.drop_modalities([hidden])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bf.exceptions.NoModalityWarning)
            post = model.predict(d, num_samples=200, seed=0)
        for calibrated, p in ((False, post), *((k, sc.transform(post)) for k, sc in (scalers or {}).items())):
            draws = p.probs(head)[:, known]
            probs = draws.mean(axis=0)
            y = encode_labels(y_all[known].to_numpy(), p.classes(head))
            cons = ece_consistency(probs, y, n_resamples=2000, seed=0)
            rows.append({"hidden": hidden or "(none)", "calibrated": calibrated, "accuracy": accuracy(probs, y),
                         "nll": nll(probs, y), "ece": ece(probs, y), "ece_null_mean": cons.null_mean,
                         "ece_p": cons.p_value, "mean_top_prob": float(probs.max(1).mean()),
                         "mean_entropy": float(predictive_entropy(draws).mean()), "n": int(known.sum())})
    return rows


# ----------------------------------------------------------------------- main
def load(name: str) -> bf.MultiModalData:
    return bf.MultiModalData.read_dir(DATA / name, drop_features=CONFIG[name]["drop"])


def selection_split(train: bf.MultiModalData, fraction: float = 0.25, seed: int = 123
                    ) -> tuple[bf.MultiModalData, bf.MultiModalData]:
    """Split the TRAIN patients into fit / selection parts (stratified by subtype where known).

    Used to choose settings (``--select``) without looking at the test split.
    """
    rs = np.random.RandomState(seed)
    ids = np.asarray(train.sample_ids)
    y = train.targets["subtype"].reindex(ids).astype(str).to_numpy() if "subtype" in train.targets else None
    sel = []
    for level in (np.unique(y) if y is not None else [None]):
        grp = ids if level is None else ids[y == level]
        sel.extend(rs.choice(grp, int(round(fraction * len(grp))), replace=False))
    sel = np.isin(ids, sel)
    return train.subset(ids=ids[~sel]), train.subset(ids=ids[sel])


def run(dataset: str, dropouts: list[float], seeds: list[int], num_samples: int, latent_dim: int,
        with_baselines: bool = True, modes: tuple[str, ...] = ("both",), select: bool = False,
        mofa: bool = False, temperature: tuple[str, ...] | None = None, recalibrate: str | None = None) -> dict:
    data = load(dataset)
    train, test = data.subset(split="train"), data.subset(split="test")
    if select:
        train, test = selection_split(train)
        print("(selection run: train split divided into fit / selection patients; the test split is not used)")
    print(f"\n=== {dataset}: train {train.n_samples}, test {test.n_samples}; "
          f"{dict(data.missingness_patterns())}")
    results: dict = {"dataset": dataset, "bayesfuse": [], "downstream": [], "baselines": []}
    from bayesfuse.data.preprocessing import ModalityTransform

    # The model's features (same fit as FusionModel.__init__) so baselines score the same columns.
    features = {m: ModalityTransform.fit(m, train.modality(m)).features for m in train.modality_names}
    if with_baselines:
        for m in CONFIG[dataset]["impute"]:
            rows = baselines(train, test, m, features, seed=0)
            if mofa:
                mrow = mofa_baseline(train, test, m, features, seed=0)
                if mrow is None:
                    print("   MOFA+: mofapy2 is not installed; skipped")
                else:
                    rows.append(mrow)
            for row in rows:
                results["baselines"].append({"modality": m, **row})
                extra = f"  auroc {row['auroc']:.3f}  brier {row['brier']:.4f}" if "auroc" in row else ""
                print(f"   baseline {m:>10} {row['method']:>18}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  "
                      f"cov90 {row['coverage_90']:.3f}{extra}  ({row['seconds']:.1f}s)", flush=True)
    for mode, p, seed in itertools.product(modes, dropouts, seeds):
        model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=latent_dim)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(seed=seed, modality_dropout=p, progress=False, modality_dropout_mode=mode)
        assert features == {m: tf.features for m, tf in model.transforms.items()}
        print(f"-- mode={mode} modality_dropout={p} seed={seed}: {model.fit_seconds_:.1f}s, best epoch "
              f"{model.best_epoch_}, n_train {model.train_config_['n_train']} + val "
              f"{model.train_config_['n_validation']}")
        for m in CONFIG[dataset]["impute"]:
            t0 = time.perf_counter()
            ev = evaluate_imputation(model, test, m, num_samples=num_samples, seed=seed)
            row = {"mode": mode, "dropout": p, "seed": seed, "recalibrated": False, **ev.as_row(),
                   "seconds": time.perf_counter() - t0}
            results["bayesfuse"].append(row)
            extra = f"  auroc {row['auroc']:.3f}  brier {row['brier']:.4f}" if "auroc" in row else ""
            print(f"   impute {m:>10}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  "
                  f"cov50 {row['coverage_50']:.3f}  cov90 {row['coverage_90']:.3f}{extra}", flush=True)
        if recalibrate:
            # Fitted on the model's own early-stopping patients (no gradient step on them); the test
            # split is not used. Only Gaussian modalities are recalibrated.
            gauss = [m for m in CONFIG[dataset]["impute"] if model.transforms[m].likelihood == "gaussian"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                recs = model.calibrate_imputation(modalities=gauss, mode=recalibrate, seed=seed)
            for m in gauss:
                rec = recs[m]
                ev = evaluate_imputation(model, test, m, num_samples=num_samples, seed=seed)
                row = {"mode": mode, "dropout": p, "seed": seed, "recalibrated": True, **ev.as_row(),
                       "slope": float(np.median(rec.slope)), "pooled_slope": rec.pooled_slope,
                       "spread": rec.spread, "recal_mode": rec.mode, "n_calibration": rec.n_patients,
                       **{f"cv_mse_{k}": v for k, v in rec.cv_mse.items()}}
                results["bayesfuse"].append(row)
                print(f"   recal  {m:>10}: r {row['pearson_r']:.3f}  rmse {row['rmse']:.3f}  "
                      f"cov50 {row['coverage_50']:.3f}  cov90 {row['coverage_90']:.3f}  ({rec.mode}: slope "
                      f"median {row['slope']:.3f}, spread {rec.spread:.3f}, {rec.n_patients} validation patients)",
                      flush=True)
        scalers = {k: validation_temperature(model, train, seed, patterns=k == "patterns") for k in temperature or ()}
        for k, sc in scalers.items():
            print(f"   temperature {k} (fitted on the {model.train_config_['n_validation']} early-stopping "
                  f"patients): {sc.temperature_:.3f}")
        for row in subtype_metrics(model, test, scalers=scalers):
            t = scalers[row["calibrated"]].temperature_ if row["calibrated"] else 1.0
            results["downstream"].append({"mode": mode, "dropout": p, "seed": seed, "temperature": t, **row})
            tag = f" (T {row['calibrated']})" if row["calibrated"] else ""
            print(f"   subtype hidden {row['hidden']:>10}{tag:>14}: acc "
                  f"{row['accuracy']:.3f}  nll {row['nll']:.3f}  ece {row['ece']:.3f} (calibrated-model floor "
                  f"{row['ece_null_mean']:.3f}, p {row['ece_p']:.2f})  "
                  f"top {row['mean_top_prob']:.3f}  H {row['mean_entropy']:.3f}", flush=True)
    _print(results)
    return results


def _print(results: dict) -> None:
    pd.set_option("display.width", 200)
    bfr = pd.DataFrame(results["bayesfuse"])
    cols = [c for c in ("pearson_r", "rmse", "coverage_50", "coverage_90", "auroc", "brier") if c in bfr]
    agg = bfr.groupby(["modality", "mode", "dropout", "recalibrated"])[cols].agg(["mean", "min", "max"])
    print("\nbayesfuse imputation (mean over seeds):")
    print(agg.round(3).to_string())
    if results["baselines"]:
        print("\nbaselines:")
        print(pd.DataFrame(results["baselines"]).set_index(["modality", "method"]).round(3).to_string())
    ds = pd.DataFrame(results["downstream"])
    print("\ndownstream subtype (mean over seeds):")
    print(ds.groupby(["mode", "dropout", "calibrated", "hidden"], sort=False)[
        ["accuracy", "nll", "ece", "ece_null_mean", "ece_p", "mean_top_prob", "mean_entropy"]].mean()
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
    ap.add_argument("--modes", nargs="+", default=["both"], choices=["both", "guide"],
                    help="modality_dropout_mode values to fit")
    ap.add_argument("--select", action="store_true",
                    help="settings-selection run: fit on 75%% of the train split, score on the other 25%%")
    ap.add_argument("--mofa", action="store_true", help="also run MOFA+ (needs mofapy2)")
    ap.add_argument("--temperature", nargs="*", default=None, choices=("full", "patterns"),
                    help="also report subtype metrics after temperature scaling on the early-stopping patients "
                         "(full: all modalities present; patterns: pooled over all present + each one hidden)")
    ap.add_argument("--recalibrate", nargs="?", const="global", default=None,
                    choices=["global", "feature", "auto", "none"],
                    help="also score Gaussian modalities after FusionModel.calibrate_imputation on the model's "
                         "early-stopping patients (slope mode; default global)")
    args = ap.parse_args()
    res = run(args.dataset, args.dropouts, args.seeds, args.num_samples, args.latent_dim, not args.no_baselines,
              tuple(args.modes), args.select, args.mofa,
              None if args.temperature is None else tuple(args.temperature or ["full"]), args.recalibrate)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
