"""Survival benchmark as it was while the survival defaults were studied (was benchmarks/survival.py).

bayesfuse survival head vs lifelines CoxPH (penalizer 0.1) and scikit-survival RSF. The release benchmark is now
the survival rows of benchmarks/zoo.py; this copy keeps the options of the study (validation partitions, head
selection, ensembles, the duplicate check) and is imported by studies/survival_refit and studies/survival_deepsurv.

Same train/test split (the dataset's own ``split`` column), same run. Prints a table of
Harrell C, Uno C, IBS and the D-calibration p-value per dataset and method, the published
DeepSurv C-index, and the 90% credible-band coverage of S(t|x) against Kaplan-Meier within
predicted-risk tertiles at three horizons (bayesfuse only). Writes JSON with ``--json``.

    PYTHONPATH=. python studies/survival_options/survival.py --datasets metabric whas --json out.json
    PYTHONPATH=. python studies/survival_options/survival.py --datasets tcga_gbmlgg --plot docs/img/survival_tcga_gbmlgg.png
    PYTHONPATH=. python studies/survival_options/survival.py --select 3 --json out.json   # hidden chosen on train only
    PYTHONPATH=. python studies/survival_options/survival.py --leakage                     # train/test duplicate check only
    PYTHONPATH=. python studies/survival_options/survival.py --validation --val-seeds 1 2 3 --ensemble 5 --no-baselines

RandomSurvivalForest (scikit-survival, GPL-3) is used here only as a benchmark baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bayesfuse as bf
from bayesfuse.metrics import (
    concordance_harrell,
    concordance_uno,
    d_calibration,
    integrated_brier_score,
    interval_coverage,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _common import eval_setup  # noqa: E402  (the zoo's harness: one definition of the scored patients and grid)

DATA = Path(os.environ.get("BAYESFUSE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
DEEPSURV_C = {"metabric": 0.6545, "support": 0.6189, "gbsg": 0.6684, "whas": 0.8667}
DATASETS = ["metabric", "support", "gbsg", "whas", "tcga_gbmlgg"]


def load(name: str, validation: bool = False, val_seed: int = 1):
    """Train/test by the dataset's split; ``validation``: train -> 80% fit / 20% validation (test unused).

    ``val_seed`` seeds the random 80/20 partition of the training set (1 = the split of the tables in
    docs/studies/survival.md).
    """
    data = bf.MultiModalData.read_dir(DATA / name)
    # times <= 0 (tcga_gbmlgg: 3, metabric: 1): opt in to dropping their survival label in training;
    # they are left out of the test metrics (every metric needs positive times)
    train, test = data.subset(split="train"), data.subset(split="test")
    if validation:
        ids = train.sample_ids
        val = np.random.RandomState(val_seed).permutation(len(ids))[: len(ids) // 5]
        mask = np.zeros(len(ids), bool)
        mask[val] = True
        train, test = train.subset(ids=ids[~mask]), train.subset(ids=ids[mask])
    return data, train, test


def features(data: bf.MultiModalData) -> pd.DataFrame:
    return pd.concat([data.modality(m).add_prefix(f"{m}:") for m in data.modality_names], axis=1) \
        .reindex(data.sample_ids).fillna(0.0)


def eval_arrays(test):
    t = test.targets["time"].to_numpy(float)
    e = test.targets["event"].to_numpy(float).astype(bool)
    ok = t > 0
    return t, e, ok


def metrics(name, tr_t, tr_e, t, e, risk, surv_grid, grid, s_own):
    inside = (grid >= t.min()) & (grid < t.max())
    return {"method": name,
            "harrell_c": concordance_harrell(t, e, risk),
            "uno_c": concordance_uno(tr_t, tr_e, t, e, risk, tau=float(grid.max())),
            "ibs": integrated_brier_score(tr_t, tr_e, t, e, surv_grid[:, inside], grid[inside]),
            "dcal_p": d_calibration(s_own, e).p_value}


HEAD_KEYS = ("n_intervals", "hidden", "weight", "smoothness", "covariates", "covariate_effect")


def _head(cfg):
    return bf.heads.Survival(time="time", event="event", nonpositive_times="drop",
                             **{k: cfg[k] for k in HEAD_KEYS if k in cfg})


def _cov_label(cfg):
    if not cfg.get("covariates"):
        return ""
    eff = cfg.get("covariate_effect", "proportional")
    return f", covariates={','.join(cfg['covariates'])}" + ("" if eff == "proportional" else f" ({eff})")


def _model_kwargs(cfg):
    return {"latent_dim": cfg.get("latent_dim", 16), "hidden": cfg.get("enc_hidden", 128), "device": "cpu"}


def _fit_kwargs(cfg):
    return {"max_epochs": cfg.get("max_epochs", 300), "lr": cfg.get("lr", 2e-3),
            "batch_size": cfg.get("batch_size", 128), "patience": cfg.get("patience", 30),
            "weight_decay": cfg.get("weight_decay", 0.0)}


def select_head(train, cfg, n_splits=3, seed=1):
    """Validation-based choice of the head's ``hidden`` (0 vs 32) on the TRAINING set only
    (``bf.evaluation.select_survival_head``); returns the cfg with the choice and the selection."""
    sel = bf.evaluation.select_survival_head(train, heads={"survival": _head(cfg)},
                                             candidates=[{"hidden": 0}, {"hidden": 32}], n_splits=n_splits,
                                             seed=seed, model_kwargs=_model_kwargs(cfg), fit_kwargs=_fit_kwargs(cfg))
    return {**cfg, **sel.best}, sel


def run_bayesfuse(train, test, grid, t, cfg, seed=0, ensemble=0):
    """Fit one model (``ensemble`` < 2) or a :class:`bayesfuse.DeepEnsemble` of ``ensemble`` members (seeds
    ``seed + k``). Returns ``post, surv_draws, risk, s_own, fit_s, model``; for an ensemble, ``model`` is the
    ensemble and ``model.single_`` holds member 0's (``= the single model of seed ``seed``) outputs."""
    if ensemble and ensemble >= 2:
        model = bf.DeepEnsemble(train, K=ensemble, heads={"survival": _head(cfg)}, **_model_kwargs(cfg))
    else:
        model = bf.FusionModel(train, heads={"survival": _head(cfg)}, **_model_kwargs(cfg))
    t0 = time.perf_counter()
    model.fit(seed=seed, progress=False, **_fit_kwargs(cfg))
    fit_s = time.perf_counter() - t0
    post = model.predict(test, num_samples=cfg.get("num_samples", 300), seed=seed)
    if ensemble and ensemble >= 2:
        # member 0 is fitted with ``seed`` and predicts with ``seed``: the single-model row of the same run
        m0 = model.members_[0]
        post0 = m0.predict(test, num_samples=cfg.get("num_samples", 300), seed=seed)
        model.single_ = (post0, *_post_outputs(post0, grid, t), m0.fit_seconds_, m0)
        model.best_epoch_ = [int(m.best_epoch_) for m in model.members_]
    return (post, *_post_outputs(post, grid, t), fit_s, model)


def _post_outputs(post, grid, t):
    """(surv_draws (S, n, T), risk (n,) = -posterior-mean RMST up to max(grid), exact S_i(t_i) (n,))."""
    surv_draws = post.survival_function("survival", grid)               # (S, n, T)
    risk = -post.restricted_mean_survival("survival", float(grid.max())).mean(0)
    return surv_draws, risk, _s_own(post, t)


def _s_own(post, t):
    """Exact posterior-predictive S_i(t_i) (mean over draws) of each patient at their own time."""
    from bayesfuse.evaluation.survival_selection import own_time_survival  # noqa: PLC0415

    return own_time_survival(post, "survival", t)


def duplicate_leakage(name: str) -> dict:
    """Share of test patients whose covariates appear identically in the training split, and the C-index
    of a pure memoriser (predicted time = mean training time of the identical covariates; CoxPH rank,
    quantile-mapped onto those times, for test patients without a twin). A published C-index that a
    memoriser nearly reaches measures train/test duplication, not a model (WHAS: see docs/studies/survival.md).
    """
    from lifelines.utils import concordance_index

    _, train, test = load(name)
    Xtr, Xte = features(train), features(test)
    cols = list(Xtr.columns)
    t, e, ok = eval_arrays(test)
    tr_t = train.targets["time"].to_numpy(float)
    twin = Xtr.assign(_t=tr_t).groupby(cols)["_t"].mean()
    key = pd.MultiIndex.from_frame(Xte[cols]) if len(cols) > 1 else pd.Index(Xte[cols[0]])
    twin_t = twin.reindex(key).to_numpy()
    has = ~np.isnan(twin_t)
    res = {"dataset": name, "n_test": int(len(t)), "test_with_train_twin": int(has.sum()),
           "twin_same_time": int(np.sum(has & np.isclose(twin_t, t)))}
    if has.any():
        tr_ok = tr_t > 0
        cox_risk, _, _ = run_cox(Xtr[tr_ok], Xte, tr_t[tr_ok], train.targets["event"].to_numpy(bool)[tr_ok],
                                 np.array([np.median(tr_t)]), t)
        ranks = (np.argsort(np.argsort(-cox_risk)) + 0.5) / len(t)
        fallback = np.quantile(twin_t[has], ranks)
        pred_t = np.where(has, twin_t, fallback)
        res["memoriser_c"] = float(concordance_index(t[ok], pred_t[ok], e[ok]))
    if has.sum() >= 30 and (~has).sum() >= 30:   # enough of each: C of each method by twin status
        tr_ok = tr_t > 0
        tr_e = train.targets["event"].to_numpy(bool)
        grid = np.quantile(t[ok], np.linspace(0.1, 0.9, 25))
        risks = {"bayesfuse": run_bayesfuse(train, test, grid, t, dict(DEFAULTS), seed=0)[2],
                 "CoxPH": run_cox(Xtr[tr_ok], Xte, tr_t[tr_ok], tr_e[tr_ok], grid, t)[0],
                 "RSF": run_rsf(Xtr[tr_ok], Xte, tr_t[tr_ok], tr_e[tr_ok], grid, t)[0]}
        for m, r in risks.items():
            for part, sel in (("all", ok), ("twin", ok & has), ("no_twin", ok & ~has)):
                res[f"c_{m}_{part}"] = float(concordance_index(t[sel], -r[sel], e[sel]))
    return res


def run_cox(Xtr, Xte, tr_t, tr_e, grid, t):
    from lifelines import CoxPHFitter
    from sklearn.preprocessing import StandardScaler

    keep = Xtr.std(axis=0) > 0
    sc = StandardScaler().fit(Xtr.loc[:, keep])
    A = pd.DataFrame(sc.transform(Xtr.loc[:, keep]), columns=[f"f{i}" for i in range(keep.sum())])
    B = pd.DataFrame(sc.transform(Xte.loc[:, keep]), columns=A.columns)
    A["T"], A["E"] = tr_t, tr_e.astype(int)
    cph = CoxPHFitter(penalizer=0.1).fit(A, "T", "E")
    risk = cph.predict_partial_hazard(B).to_numpy()
    surv = cph.predict_survival_function(B, times=grid).to_numpy().T
    # S_i(t_i): one call on all patients' own times (rows: times, columns: patients), then the diagonal
    s_own = np.diag(cph.predict_survival_function(B, times=t).to_numpy()).copy()
    return risk, surv, s_own


def run_rsf(Xtr, Xte, tr_t, tr_e, grid, t, seed=0):
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    rsf = RandomSurvivalForest(n_estimators=200, min_samples_leaf=15, max_features="sqrt", n_jobs=1,
                               random_state=seed).fit(Xtr.to_numpy(), Surv.from_arrays(tr_e.astype(bool), tr_t))
    risk = rsf.predict(Xte.to_numpy())
    fns = rsf.predict_survival_function(Xte.to_numpy())
    surv = np.array([fn(np.clip(grid, fn.x[0], fn.x[-1])) for fn in fns])
    surv[:, grid < fns[0].x[0]] = 1.0
    s_own = np.array([fn(np.clip(ti, fn.x[0], fn.x[-1])) if ti >= fn.x[0] else 1.0 for fn, ti in zip(fns, t)])
    return risk, surv, s_own


DEFAULTS = {"latent_dim": 16, "n_intervals": 12, "hidden": 0}


def benchmark(name: str, cfg: dict, baselines: bool = True, plot: str | None = None, seed: int = 0,
              validation: bool = False, val_seed: int = 1, select_splits: int = 0, ensemble: int = 0) -> dict:
    data, train, test = load(name, validation, val_seed)
    extra = {}
    cfg0 = dict(cfg)
    if select_splits:
        t0 = time.perf_counter()
        cfg, sel = select_head(train, cfg, n_splits=select_splits)
        extra["selection"] = sel.summary.to_dict(orient="list")
        extra["selection_table"] = sel.table.to_dict(orient="list")
        extra["selection_s"] = time.perf_counter() - t0
    test_eval, t, e, tr_ok, tr_t, tr_e, grid = eval_setup(train, test)
    rows = []
    post, surv_draws, risk, s_own, fit_s, model = run_bayesfuse(train, test_eval, grid, t, cfg, seed, ensemble)
    surv = surv_draws.mean(0)
    label = f"ensemble K={ensemble}, " if ensemble and ensemble >= 2 else ""
    r = metrics(f"bayesfuse ({label}hidden={cfg.get('hidden', 0)}{_cov_label(cfg)})", tr_t, tr_e, t, e, risk, surv,
                grid, s_own)
    r["fit_s"] = fit_s
    r["best_epoch"] = model.best_epoch_
    rows.append(r)
    horizons = np.quantile(t, [0.25, 0.5, 0.75])
    if ensemble and ensemble >= 2:
        # the single model of the same seed (= member 0) on the same split, same run
        p1, sd1, risk1, so1, fit1, m1 = model.single_
        r1 = metrics(f"bayesfuse (single, hidden={cfg.get('hidden', 0)})", tr_t, tr_e, t, e, risk1, sd1.mean(0),
                     grid, so1)
        r1["fit_s"], r1["best_epoch"] = fit1, m1.best_epoch_
        rows.append(r1)
        extra["coverage_single"] = interval_coverage(t, e, sd1, grid, horizons, groups=3, prob=0.9).coverage
        extra["coverage_pred_single"] = interval_coverage(t, e, sd1, grid, horizons, groups=3, prob=0.9,
                                                          km_error=True).coverage
    if cfg0.get("hidden", 0) != cfg.get("hidden", 0):
        # the unselected default on the same split, for the before/after table
        post0, sd0, risk0, so0, fit0, model0 = run_bayesfuse(train, test_eval, grid, t, cfg0, seed)
        r0 = metrics(f"bayesfuse (hidden={cfg0.get('hidden', 0)})", tr_t, tr_e, t, e, risk0, sd0.mean(0), grid, so0)
        r0["fit_s"], r0["best_epoch"] = fit0, model0.best_epoch_
        rows.append(r0)
        extra["coverage_default"] = interval_coverage(t, e, sd0, grid, horizons, groups=3, prob=0.9).coverage
        extra["coverage_pred_default"] = interval_coverage(t, e, sd0, grid, horizons, groups=3, prob=0.9,
                                                           km_error=True).coverage
    cov = interval_coverage(t, e, surv_draws, grid, horizons, groups=3, prob=0.9)
    extra["coverage"] = cov.coverage
    extra["coverage_table"] = cov.table.to_dict(orient="list")
    # predictive coverage: band widened by the KM estimate's own Greenwood sampling error
    extra["coverage_pred"] = interval_coverage(t, e, surv_draws, grid, horizons, groups=3, prob=0.9,
                                               km_error=True).coverage
    if baselines:
        Xtr = features(train).loc[train.sample_ids[tr_ok]]
        Xte = features(test_eval)
        t0 = time.perf_counter()
        cr, cs, co = run_cox(Xtr, Xte, tr_t, tr_e, grid, t)
        rows.append({**metrics("CoxPH", tr_t, tr_e, t, e, cr, cs, grid, co), "fit_s": time.perf_counter() - t0})
        t0 = time.perf_counter()
        rr, rs, ro = run_rsf(Xtr, Xte, tr_t, tr_e, grid, t, seed)
        rows.append({**metrics("RSF", tr_t, tr_e, t, e, rr, rs, grid, ro), "fit_s": time.perf_counter() - t0})
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        bf.plotting.survival_calibration_plot(t, e, surv, grid, groups=3, horizon=float(np.median(t)), ax=axes[0])
        axes[0].set_title(f"{name}: predicted (dashed) vs KM by risk tertile")
        bf.plotting.d_calibration_histogram(d_calibration(s_own, e), ax=axes[1])
        fig.tight_layout()
        fig.savefig(plot, dpi=72)
        plt.close(fig)
    for r in rows:
        r["dataset"] = name
        r["n_test"] = int(len(t))
    return {"dataset": name, "rows": rows, **extra, "horizons": horizons.tolist(), "config": cfg, "seed": seed,
            "validation": bool(validation), "val_seed": int(val_seed) if validation else None,
            "ensemble": int(ensemble)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--config", type=json.loads, default={}, help='JSON overrides, e.g. \'{"hidden": 32}\'')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--validation", action="store_true", help="evaluate on a 20%% split of train (model choice)")
    ap.add_argument("--val-seeds", type=int, nargs="*", default=[1],
                    help="with --validation: the seeds of the random 80/20 partitions of train (one run each)")
    ap.add_argument("--ensemble", type=int, default=0, metavar="K",
                    help="fit bayesfuse as a DeepEnsemble of K members (seeds seed..seed+K-1); member 0 "
                         "(= the single model of --seed) is reported alongside")
    ap.add_argument("--select", type=int, default=0, metavar="N_SPLITS",
                    help="choose the head's hidden (0 vs 32) on N_SPLITS validation splits of train first")
    ap.add_argument("--json")
    ap.add_argument("--plot", help="PNG path for the tcga_gbmlgg calibration figure")
    ap.add_argument("--leakage", action="store_true",
                    help="only print the train/test duplicate check and the memoriser C-index per dataset")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    if args.leakage:
        rows = [duplicate_leakage(name) for name in args.datasets]
        print(pd.DataFrame(rows).round(4).T.to_string(header=False))
        return
    out = []
    runs = [(name, vs) for name in args.datasets for vs in (args.val_seeds if args.validation else [1])]
    for name, val_seed in runs:
        cfg = {**DEFAULTS, **args.config}
        res = benchmark(name, cfg, baselines=not args.no_baselines,
                        plot=args.plot if name == "tcga_gbmlgg" else None, seed=args.seed,
                        validation=args.validation, val_seed=val_seed, select_splits=args.select,
                        ensemble=args.ensemble)
        out.append(res)
        if args.json:   # written after every run, so an interrupted run keeps what it measured
            Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        if "selection" in res:
            print(f"\n-- {name}: validation selection on train ({args.select} splits, "
                  f"{res['selection_s']:.0f} s)")
            print(pd.DataFrame(res["selection"]).round(4).to_string(index=False))
        df = pd.DataFrame(res["rows"]).set_index("method")
        where = f"validation split {val_seed}" if args.validation else "test"
        print(f"\n== {name} [{where}] (n_test={res['rows'][0]['n_test']}; DeepSurv published C: "
              f"{DEEPSURV_C.get(name, 'n/a')})")
        print(df[[c for c in ("harrell_c", "uno_c", "ibs", "dcal_p", "fit_s") if c in df]].round(4).to_string())
        print(f"90% band coverage of KM (tertiles x horizons {np.round(res['horizons'], 1).tolist()}): "
              f"{res['coverage']:.2f}; predictive (band + KM Greenwood error): {res['coverage_pred']:.2f}")
        if "coverage_single" in res:
            print(f"  single model: {res['coverage_single']:.2f}; predictive {res['coverage_pred_single']:.2f}")
        if "coverage_default" in res:
            print(f"  unselected default: {res['coverage_default']:.2f}; predictive {res['coverage_pred_default']:.2f}")
        print(pd.DataFrame(res["coverage_table"]).round(3).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
