"""Calibration-map variants on the simulator: raw, pooled temperature, per-pattern temperatures, test optimum.

Usage (see README.md for the runs and conclusions)::

    python studies/class_calibration/compare.py SEED N_PATIENTS MISSING_RATE TEST_FRACTION

Fits ``FusionModel(latent_dim=8)`` with ``calibrate=False``, then fits maps on the fit's validation
patients with pattern prior sds 0 (pooled only), 0.1, 0.25, 0.5, and prints test NLL / ECE for each and
for the test set's own maximum-likelihood temperature (the oracle), per head.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import bayesfuse as bf
from bayesfuse._labels import label_codes
from bayesfuse.metrics import ece, nll
from bayesfuse.model.head_calibration import fit_class_calibration
from bayesfuse.posterior.class_calibration import map_log_temperature, tempered_log_predictive


def main(seed: int, n: int, missing: float, test_fraction: float) -> None:
    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=n, missing_rate=missing, seed=seed, test_fraction=test_fraction)
    train, test = data.subset(split="train"), data.subset(split="test")
    model = bf.FusionModel(train, heads={"subtype": "categorical", "origin": "categorical"}, latent_dim=8)
    model.fit(seed=seed, progress=False, calibrate=False)
    post = model.predict(test, 200, calibrated=False)
    val = train.subset(ids=model.train_config_["validation_ids"])
    maps = {f"pattern_sd={sd}": fit_class_calibration(model, val, pattern_sd=sd) for sd in (1e-6, 0.1, 0.25, 0.5)}
    pres = post.presence[model.modalities].to_numpy()
    print(f"seed {seed}: n_train {train.n_samples}, n_validation {val.n_samples}, n_test {test.n_samples}")
    for h in ("subtype", "origin"):
        y = label_codes(test.targets[h].to_numpy(), post.classes(h))
        lp = np.log(np.clip(post.probs(h).astype(float), 1e-300, None))
        temps = {"raw": 1.0, **{k: m[h].patient_temperatures(pres) for k, m in maps.items()},
                 "oracle": float(np.exp(map_log_temperature(lp, y, None, 0.0, np.inf)))}
        cells = []
        for name, t in temps.items():
            p = np.exp(tempered_log_predictive(lp, t))
            cells.append(f"{name} T={np.mean(t):.2f} nll={nll(p, y):.3f} ece={ece(p, y):.3f}")
        print(f"  {h}: " + " | ".join(cells))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]) if len(a) > 1 else 800, float(a[2]) if len(a) > 2 else 0.2,
         float(a[3]) if len(a) > 3 else 0.25)
