"""Subtype / origin classification on the shared real data: bayesfuse vs L2 logistic regression.

Usage: python benchmarks/classification.py [--data ../shared/data] [--json out.json] [--seeds 0 1 2]

Prints test accuracy, macro-F1, NLL and top-label ECE (15 equal-width bins) of the
posterior-mean probabilities, beside logistic regression on the same split, and fit time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_classification
from bayesfuse.metrics import classification_metrics, encode_labels

TASKS = {
    "tcga_gbmlgg": ("subtype", {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}, None),
    "tcga_rare6": ("origin", None, "log_cpm"),
}


def _concat(data, transform):
    frames = []
    for m in data.modality_names:
        df = data.modality(m)
        if transform == "log_cpm":
            df = np.log1p(df.div(df.sum(axis=1), axis=0) * 1e6)
        frames.append(df.add_prefix(f"{m}:"))
    return pd.concat(frames, axis=1).loc[data.sample_ids]


def logistic_regression(train, test, target, transform):
    xtr, xte = _concat(train, transform), _concat(test, transform)
    ytr, yte = train.targets[target], test.targets[target]
    ktr, kte = ytr.notna().to_numpy(), yte.notna().to_numpy()
    t0 = time.perf_counter()
    sc = StandardScaler().fit(xtr[ktr])
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(sc.transform(xtr[ktr]), ytr[ktr])
    fit_s = time.perf_counter() - t0
    proba = pd.DataFrame(clf.predict_proba(sc.transform(xte[kte])), columns=clf.classes_)
    classes = sorted(clf.classes_)
    m = classification_metrics(proba[classes].to_numpy(), encode_labels(yte[kte].to_numpy(), classes))
    return m, fit_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--datasets", nargs="*", default=list(TASKS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.datasets:
        target, drop, transform = TASKS[name]
        t0 = time.perf_counter()
        data = bf.MultiModalData.read_dir(Path(args.data) / name, drop_features=drop)
        read_s = time.perf_counter() - t0
        train, test = data.subset(split="train"), data.subset(split="test")
        lr, lr_s = logistic_regression(train, test, target, transform)
        rows.append({"dataset": name, "target": target, "method": "logistic regression (L2, C=1)", "seed": None,
                     **lr.__dict__, "fit_s": lr_s, "read_s": read_s})
        for seed in args.seeds:
            model = bf.FusionModel(train, heads={target: "categorical"}, latent_dim=16)
            model.fit(seed=seed, progress=False)
            t1 = time.perf_counter()
            post = model.predict(test, num_samples=200, seed=seed)
            pred_s = time.perf_counter() - t1
            m = evaluate_classification(post, test.targets[target], target)
            rows.append({"dataset": name, "target": target, "method": "bayesfuse", "seed": seed, **m.__dict__,
                         "fit_s": model.fit_seconds_, "predict_s": pred_s, "epochs": len(model.history_),
                         "read_s": read_s})
    df = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        print(df.drop(columns=["read_s"]).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return df


if __name__ == "__main__":
    main()
