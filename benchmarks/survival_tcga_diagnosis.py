"""tcga_gbmlgg: where does the survival signal sit, and does the bayesfuse latent keep it? (validation only)

On random 80/20 partitions of the TRAINING split (``--val-seeds``; the test split is never read), fits
CoxPH (lifelines, penalizer 0.1) and RSF (scikit-survival) on feature subsets, a default bayesfuse model,
and CoxPH on the bayesfuse latent means (train-fitted), and reports validation Harrell C; plus how much of
age / IDH1 / 1p / 19q the latent means explain (R^2 of a ridge regression fitted on train, scored on
validation). Survival has no leakage columns (the README's list is for the subtype task).

    PYTHONPATH=. python benchmarks/survival_tcga_diagnosis.py --val-seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from survival import DEFAULTS, _fit_kwargs, _head, _model_kwargs, features, load, run_cox, run_rsf  # noqa: E402

import bayesfuse as bf  # noqa: E402
from bayesfuse.metrics import concordance_harrell  # noqa: E402

AGE = "clinical:age_at_initial_pathologic_diagnosis"
KEY = ["mutation:IDH1", "mutation:IDH2", "cnv_arm:1p", "cnv_arm:19q"]


def subsets(cols):
    clin = [c for c in cols if c.startswith("clinical:")]
    return {"age": [AGE], "clinical": clin, "IDH1/2+1p+19q": KEY, "age+IDH1/2+1p+19q": [AGE, *KEY],
            "clinical+IDH1/2+1p+19q": clin + KEY,
            **{f"modality {m}": [c for c in cols if c.startswith(f"{m}:")]
               for m in ("clinical", "mutation", "cnv_gene", "cnv_arm", "protein")},
            "all": list(cols)}


def one_split(val_seed: int, cfg: dict, fit_seed: int) -> list[dict]:
    _, train, val = load("tcga_gbmlgg", validation=True, val_seed=val_seed)
    tt, te_ = train.targets["time"].to_numpy(float), train.targets["event"].to_numpy(bool)
    ok = tt > 0
    vt, ve = val.targets["time"].to_numpy(float), val.targets["event"].to_numpy(bool)
    vok = vt > 0
    Xtr, Xva = features(train)[ok], features(val)[vok]
    vt, ve = vt[vok], ve[vok]
    tt, te_ = tt[ok], te_[ok]
    grid = np.quantile(vt, [0.25, 0.5])
    rows = []
    for name, cols in subsets(Xtr.columns).items():
        r = {"split": val_seed, "features": name, "n_features": len(cols)}
        r["coxph_c"] = concordance_harrell(vt, ve, run_cox(Xtr[cols], Xva[cols], tt, te_, grid, vt)[0])
        r["rsf_c"] = concordance_harrell(vt, ve, run_rsf(Xtr[cols], Xva[cols], tt, te_, grid, vt)[0])
        rows.append(r)
    model = bf.FusionModel(train, heads={"survival": _head(cfg)}, **_model_kwargs(cfg))
    model.fit(seed=fit_seed, progress=False, **_fit_kwargs(cfg))
    vsub = val.subset(ids=val.sample_ids[vok])
    pv = model.predict(vsub, num_samples=200, seed=fit_seed)
    risk = -pv.restricted_mean_survival("survival", float(np.quantile(vt, 0.9))).mean(0)
    ptr = model.predict(train.subset(ids=train.sample_ids[ok]), num_samples=2, seed=fit_seed)
    Ztr, Zva = pd.DataFrame(ptr.latent_loc), pd.DataFrame(pv.latent_loc)
    r = {"split": val_seed, "features": "bayesfuse", "n_features": Ztr.shape[1],
         "bayesfuse_c": concordance_harrell(vt, ve, risk),
         "coxph_c": concordance_harrell(vt, ve, run_cox(Ztr, Zva, tt, te_, grid, vt)[0]),
         "rsf_c": concordance_harrell(vt, ve, run_rsf(Ztr, Zva, tt, te_, grid, vt)[0])}
    from sklearn.linear_model import RidgeCV
    for c in [AGE, *KEY]:
        reg = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Ztr, Xtr[c])
        r[f"R2 {c.split(':')[1]}"] = float(reg.score(Zva, Xva[c]))
    # latent + age: does adding the raw clinical features back to the latent help a CoxPH?
    clin = [c for c in Xtr.columns if c.startswith("clinical:")]
    ZA = pd.concat([Ztr.reset_index(drop=True), Xtr[clin].reset_index(drop=True)], axis=1)
    ZB = pd.concat([Zva.reset_index(drop=True), Xva[clin].reset_index(drop=True)], axis=1)
    ZA.columns = ZB.columns = [str(c) for c in ZA.columns]
    r["coxph_latent+clinical_c"] = concordance_harrell(vt, ve, run_cox(ZA, ZB, tt, te_, grid, vt)[0])
    rows.append(r)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--val-seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--config", type=json.loads, default={})
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    cfg = {**DEFAULTS, **args.config}
    rows = []
    for s in args.val_seeds:
        rows += one_split(s, cfg, fit_seed=s)
        print(f"split {s} done", flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    num = df.drop(columns=["split"]).groupby("features", sort=False).mean(numeric_only=True)
    print("\nmean over splits:")
    print(num.round(3).to_string())
    if args.json:
        Path(args.json).write_text(df.to_json(orient="records", indent=1))


if __name__ == "__main__":
    main()
