"""Benchmark of weight uncertainty (docs/bayesian.md).

Sections (run one or all: ``python benchmarks/bayesian.py [compare|ood|shift|nuts|cost] --json out.json``):

* compare: tcga_gbmlgg subtype (leakage columns mutation IDH1/IDH2, cnv_arm 1p/19q dropped) and
  tcga_rare6 origin, fixed train/test split, seeds 0..4: deterministic (``bayesian="none"``),
  MC dropout, 5-member deep ensemble and the default Bayesian model; test NLL, top-label ECE
  (15 bins), accuracy, mean +- sd over seeds.
* shift: tcga_gbmlgg test protein modality with a batch offset and extra noise (each 0.5 train
  sd per feature): ECE of the deterministic and the Bayesian model, clean vs shifted (seeds 0..4).
* ood: tcga_rare6 fitted without one tumour type; AUROC of the mutual information separating
  the held-out type's patients from the known-type test patients.
* nuts: softmax-regression sub-model on the fitted gbmlgg latent means; NUTS (NumPyro) vs SVI
  guides (mean-field, low-rank, full-rank, full-rank shrunk 3x as negative control).
* cost: seconds per SVI epoch by mode on tcga_gbmlgg.

Fits are shortened for the 2-core shared CPU (max_epochs=80, kl_warmup_epochs=20, patience=15).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch

import bayesfuse as bf
from bayesfuse.metrics.classification import accuracy, ece, encode_labels, mutual_information, nll

torch.set_num_threads(1)
warnings.simplefilter("ignore")
DATA = "/work/shared/data"
SEEDS = [0, 1, 2, 3, 4]
FIT = {"max_epochs": 80, "kl_warmup_epochs": 20, "patience": 15, "progress": False}
DEFAULT = "heads"


def load(name):
    d = bf.MultiModalData.read_dir(f"{DATA}/{name}")
    if name == "tcga_gbmlgg":
        return d.drop_features({"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}), "subtype"
    return d, "origin"


def scores(post, data, target):
    y = data.targets[target]
    ok = y.notna().to_numpy()
    p = post.mean_probs(target).to_numpy()[ok]
    yy = encode_labels(y[ok].to_numpy(), post.classes(target))
    return {"nll": nll(p, yy), "ece": ece(p, yy), "acc": accuracy(p, yy)}


def fit_method(method, train, target, seed):
    if method == "ensemble":
        return bf.DeepEnsemble(train, K=5, heads={target: "categorical"}, bayesian="none").fit(seed=seed * 100, **FIT)
    return bf.FusionModel(train, heads={target: "categorical"}, bayesian=method).fit(seed=seed, **FIT)


def table(rows, keys):
    methods = sorted({r["method"] for r in rows}, key=lambda m: ["none", "mc_dropout", "ensemble", DEFAULT].index(m)
                     if m in ["none", "mc_dropout", "ensemble", DEFAULT] else 9)
    for ds in sorted({r["dataset"] for r in rows}):
        print(f"\n{ds}  (n seeds = {len({r['seed'] for r in rows})})")
        print("| method | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for m in methods:
            rr = [r for r in rows if r["dataset"] == ds and r["method"] == m]
            if rr:
                cells = [f"{np.mean([r[k] for r in rr]):.3f} +- {np.std([r[k] for r in rr], ddof=1):.3f}" for k in keys]
                print(f"| {m} | " + " | ".join(cells) + " |")


def compare(datasets=("tcga_gbmlgg", "tcga_rare6")):
    rows = []
    for name in datasets:
        d, target = load(name)
        tr, te = d.subset(split="train"), d.subset(split="test")
        for seed in SEEDS:
            for method in ["none", "mc_dropout", "ensemble", DEFAULT]:
                t = time.perf_counter()
                model = fit_method(method, tr, target, seed)
                post = model.predict(te, num_samples=200, seed=seed)
                r = {"dataset": name, "method": method, "seed": seed, **scores(post, te, target),
                     "mean_MI": float(mutual_information(post.probs(target)).mean()),
                     "seconds": time.perf_counter() - t}
                print(r, flush=True)
                rows.append(r)
    table(rows, ["nll", "ece", "acc", "mean_MI", "seconds"])
    return rows


def shift():
    d, target = load("tcga_gbmlgg")
    tr, te = d.subset(split="train"), d.subset(split="test")
    prot = te.modality("protein")
    sd = tr.modality("protein").std(axis=0).replace(0, 1.0)
    rows = []
    for seed in SEEDS:
        rs = np.random.RandomState(1000 + seed)
        offset = rs.normal(0, 0.5, prot.shape[1]) * sd.to_numpy()           # batch effect per feature
        noise = rs.normal(0, 0.5, prot.shape) * sd.to_numpy()                # extra measurement noise
        te_shift = te.with_modality("protein", prot + offset + noise)
        for method in ["none", DEFAULT]:
            model = fit_method(method, tr, target, seed)
            clean = scores(model.predict(te, seed=seed), te, target)
            shifted = scores(model.predict(te_shift, seed=seed), te, target)
            r = {"dataset": "tcga_gbmlgg+protein shift", "method": method, "seed": seed,
                 "ece_clean": clean["ece"], "ece_shift": shifted["ece"], "nll_clean": clean["nll"],
                 "nll_shift": shifted["nll"], "acc_shift": shifted["acc"]}
            r["ece_increase"] = r["ece_shift"] - r["ece_clean"]
            print(r, flush=True)
            rows.append(r)
    table(rows, ["ece_clean", "ece_shift", "ece_increase", "nll_clean", "nll_shift", "acc_shift"])
    return rows


def ood(held_out="UVM"):
    from sklearn.metrics import roc_auc_score

    d, target = load("tcga_rare6")
    known = d.targets[target] != held_out
    tr = d.subset(split="train")
    tr = tr.subset(ids=tr.sample_ids[known.loc[tr.sample_ids].to_numpy()])
    te = d.subset(split="test")
    is_ood = (te.targets[target] == held_out).to_numpy()
    rows = []
    for seed in SEEDS[:3]:
        for method in ["none", DEFAULT, "mc_dropout"]:
            model = bf.FusionModel(tr, heads={target: "categorical"}, bayesian=method).fit(seed=seed, **FIT)
            post = model.predict(te, seed=seed)
            u = post.uncertainty(target)
            r = {"dataset": f"tcga_rare6 without {held_out}", "method": method, "seed": seed,
                 "auroc_MI": roc_auc_score(is_ood, u["epistemic"]), "auroc_total": roc_auc_score(is_ood, u["total"]),
                 "MI_ood": float(u["epistemic"][is_ood].mean()), "MI_known": float(u["epistemic"][~is_ood].mean())}
            print(r, flush=True)
            rows.append(r)
    table(rows, ["auroc_MI", "auroc_total", "MI_ood", "MI_known"])
    return rows


def nuts():
    from bayesfuse.diagnostics.reference import (
        compare_posteriors,
        fit_svi_submodel,
        run_nuts,
        softmax_predictive,
    )
    from bayesfuse.diagnostics.vi import guide_khat

    d, target = load("tcga_gbmlgg")
    tr, te = d.subset(split="train"), d.subset(split="test")
    model = bf.FusionModel(tr, heads={target: "categorical"}, bayesian=DEFAULT, latent_dim=4).fit(seed=0, **FIT)
    ptr, pte = model.predict(tr, seed=0), model.predict(te, seed=0)
    classes = ptr.classes(target)
    ok = tr.targets[target].notna().to_numpy()
    z, y = ptr.latent_loc[ok], encode_labels(tr.targets[target][ok].to_numpy(), classes)
    okt = te.targets[target].notna().to_numpy()
    zt, yt = pte.latent_loc[okt], encode_labels(te.targets[target][okt].to_numpy(), classes)
    C = len(classes)
    res = run_nuts(z, y, C, num_warmup=500, num_samples=500, num_chains=4)
    ref = res.flat
    print(f"NUTS: P={ref.shape[1]}, r-hat max {res.rhat_max:.4f}, bulk ESS min {res.ess_bulk_min:.0f}, "
          f"{res.seconds:.1f} s; predictive ECE {ece(softmax_predictive(zt, ref, C), yt):.4f}")
    rows = []
    zz, yy = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(y)
    for fam, shrink in [("meanfield", 1), ("lowrank", 1), ("fullrank", 1), ("fullrank", 3)]:
        t = time.perf_counter()
        head = fit_svi_submodel(z, y, C, guide=fam, steps=2000, num_particles=2)
        secs = time.perf_counter() - t
        with torch.no_grad():
            dr = head.posterior_q.distribution().sample((4000,)).numpy()
        loc = dr.mean(0)
        dr = loc + (dr - loc) / shrink
        c = compare_posteriors(dr, ref)
        k = guide_khat(head, zz, yy, 4000, weight=1.0, shrink=shrink)
        r = {"guide": fam + (f" shrunk {shrink}x" if shrink != 1 else ""), "max_mean_shift": c.max_mean_shift,
             "min_sd_ratio": c.min_sd_ratio, "max_sd_ratio": c.max_sd_ratio, "khat": k, "passed": c.passed,
             "pred_ece": ece(softmax_predictive(zt, dr, C), yt), "svi_seconds": secs}
        print(r, flush=True)
        rows.append(r)
    print("\n| guide | max mean shift (sd) | sd ratio min..max | k-hat | passes | test ECE | SVI s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['guide']} | {r['max_mean_shift']:.2f} | {r['min_sd_ratio']:.2f}..{r['max_sd_ratio']:.2f} | "
              f"{r['khat']:.2f} | {r['passed']} | {r['pred_ece']:.4f} | {r['svi_seconds']:.0f} |")
    return {"nuts": {"rhat_max": res.rhat_max, "ess_bulk_min": res.ess_bulk_min, "seconds": res.seconds,
                     "P": int(ref.shape[1])}, "guides": rows}


def cost():
    d, target = load("tcga_gbmlgg")
    tr = d.subset(split="train")
    rows = []
    for mode in ["none", "heads", "encoders+heads", "all", "mc_dropout"]:
        m = bf.FusionModel(tr, heads={target: "categorical"}, bayesian=mode)
        m.fit(seed=0, max_epochs=25, kl_warmup_epochs=5, validation_fraction=0, progress=False)
        per = float(np.median(np.diff(m.history_["seconds"].to_numpy())))
        t = time.perf_counter()
        m.predict(tr, num_samples=200)
        rows.append({"mode": mode, "s_per_epoch": per, "predict_s": time.perf_counter() - t})
        print(rows[-1], flush=True)
    base = rows[0]["s_per_epoch"]
    print("\n| mode | s / epoch | x none | predict 200 draws (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['s_per_epoch']:.3f} | {r['s_per_epoch'] / base:.2f} | {r['predict_s']:.2f} |")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("sections", nargs="*", default=["cost", "nuts", "compare", "shift", "ood"])
    ap.add_argument("--json")
    a = ap.parse_args()
    out = {}
    for s in a.sections:
        if s.startswith("compare:"):
            out[s] = compare([s.split(":", 1)[1]])
        else:
            out[s] = globals()[s]()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    sys.exit(0)
