"""Supervised gene screening (univariate Cox score test on the training split; Bair & Tibshirani 2004, "Semi-
supervised methods to predict patient survival from gene expression data") before the bayesfuse fit (study,
2026-12-08; not maintained).

    python studies/wide_survival/screening.py GENES TAG FIT_KWARGS_JSON SEEDS [ROW_PATTERNS...]
    e.g. python studies/wide_survival/screening.py 200 scr200h '{"early_stopping": "heads"}' 0,1,2 'surv:*resplit'

Keeps the GENES expression genes of largest |score z|. Writes benchmarks/results/zoo_TAG.json.
"""

from __future__ import annotations

import json
import sys

import _harness as H
import numpy as np

import bayesfuse as bf


def cox_score_z(x, t, e):
    """Score statistic ``U / sqrt(I)`` at beta = 0 of a univariate Cox model per column of ``x`` (n, p) (ties: risk
    set order). Checked against central finite differences (h = 1e-4) of the Breslow partial log-likelihood written
    as a direct loop (60 patients, 3 columns, no ties): equal to 7 significant digits."""
    order = np.argsort(-t, kind="stable")          # descending time: the risk set of row i is rows 0..i
    xs, ev = x[order], e[order].astype(bool)
    n_at_risk = np.arange(1, len(t) + 1)[:, None]
    mean = np.cumsum(xs, 0) / n_at_risk
    var = np.cumsum(xs ** 2, 0) / n_at_risk - mean ** 2
    return (xs[ev] - mean[ev]).sum(0) / np.sqrt(np.maximum(var[ev].sum(0), 1e-12))


def screen(genes, mod="expression"):
    def prepare(train, test):
        df = train.modality(mod)
        tt = train.targets.loc[df.index]
        ok = (tt["time"].astype(float) > 0).to_numpy()
        x = df.to_numpy(float)[ok]
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
        z = cox_score_z(x, tt["time"].to_numpy(float)[ok], tt["event"].to_numpy(int)[ok])
        keep = df.columns[np.sort(np.argsort(-np.abs(z))[:genes])]

        def sub(d):
            return bf.MultiModalData({m: d.modality(m)[keep] if m == mod else d.modality(m) for m in d.modality_names},
                                     targets=d.targets, name=d.name, copy=False)
        return sub(train), sub(test)
    return prepare


def main():
    genes, tag, fk = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    seeds = [int(s) for s in sys.argv[4].split(",")]

    def fit_predict(train, test_eval, seed, extra):
        head = bf.heads.Survival(time="time", event="event", nonpositive_times="drop")
        model = bf.FusionModel(train, heads={"survival": head}).fit(seed=seed, progress=False, **fk)
        extra["epochs"] = len(model.history_)
        return model.predict(test_eval, num_samples=200, seed=seed)

    H.run(tag, sys.argv[5:], seeds, fit_predict, prepare=screen(genes))


if __name__ == "__main__":
    main()
