"""Training cost of the survival head's direct covariate path: seconds per epoch, default vs covariates.

Fixed number of epochs (no early stopping), the two configurations interleaved ``--repeats`` times on the
same training partition (validation partition 1 of benchmarks/survival.py), so that load from other
processes on a shared machine hits both alike. Prints the median seconds per epoch and the ratio.

    PYTHONPATH=. python benchmarks/survival_covariates_timing.py --datasets tcga_gbmlgg metabric
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

import bayesfuse as bf
from benchmarks.survival import load


def seconds_per_epoch(train, covariates, epochs, seed=0):
    head = bf.heads.Survival(time="time", event="event", nonpositive_times="drop", covariates=covariates)
    model = bf.FusionModel(train, heads={"survival": head}, latent_dim=16, device="cpu")
    t0 = time.perf_counter()
    model.fit(max_epochs=epochs, patience=10 * epochs, seed=seed, progress=False)
    return (time.perf_counter() - t0) / len(model.history_)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["tcga_gbmlgg", "metabric"])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows = []
    for name in args.datasets:
        _, train, _ = load(name, validation=True, val_seed=1)
        s = {"default": [], "covariates": []}
        for _ in range(args.repeats):
            s["default"].append(seconds_per_epoch(train, None, args.epochs))
            s["covariates"].append(seconds_per_epoch(train, ["clinical"], args.epochs))
        d, c = np.median(s["default"]), np.median(s["covariates"])
        rows.append({"dataset": name, "n_train": train.n_samples, "s/epoch default": d, "s/epoch covariates": c,
                     "ratio": c / d})
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
