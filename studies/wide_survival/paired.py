"""Paired per-seed comparison of bayesfuse with penalised CoxPH / RSF on zoo survival rows.

    python studies/wide_survival/paired.py benchmarks/results/zoo_A.json [zoo_B.json ...] [--variant zoo_V.json ...]

Reads zoo JSON files (``benchmarks/zoo.py``; the first files must hold the baselines), pools their records by
(row, method, seed) and prints, per row, the mean Harrell C of bayesfuse, CoxPH and RSF over the seeds they share,
bayesfuse minus CoxPH with a 95% bootstrap interval over seeds (4,000 resamples, seed 0) and the number of seeds on
which bayesfuse is higher. ``--variant`` files replace the bayesfuse records (e.g. a ``--bayesfuse-only`` run or a
study script's output of the same rows and seeds).
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np


def load(paths, only_bayesfuse=False):
    out = collections.defaultdict(dict)
    for p in paths:
        for r in json.load(open(p))["records"]:
            if "harrell_c" in r and (not only_bayesfuse or r["method"] == "bayesfuse"):
                out[(r["row"], r["method"])][r["seed"]] = r["harrell_c"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", nargs="+")
    ap.add_argument("--variant", nargs="*", default=[])
    args = ap.parse_args(argv)
    d = load(args.base)
    if args.variant:
        for k in [k for k in d if k[1] == "bayesfuse"]:
            del d[k]
        d.update(load(args.variant, only_bayesfuse=True))
    rng = np.random.default_rng(0)
    print("| row | seeds | bayesfuse | CoxPH | RSF | bayesfuse - CoxPH [95% bootstrap] | seeds bayesfuse > CoxPH |")
    print("|---|---|---|---|---|---|---|")
    for row in sorted({k[0] for k in d}):
        b, c, f = d.get((row, "bayesfuse"), {}), d.get((row, "CoxPH"), {}), d.get((row, "RSF"), {})
        s = sorted(set(b) & set(c) & set(f))
        if not s:
            continue
        diff = np.array([b[i] - c[i] for i in s])
        boot = diff[rng.integers(0, len(s), (4000, len(s)))].mean(1)
        print(f"| {row} | {len(s)} | {np.mean([b[i] for i in s]):.3f} | {np.mean([c[i] for i in s]):.3f} | "
              f"{np.mean([f[i] for i in s]):.3f} | {diff.mean():+.3f} [{np.quantile(boot, .025):+.3f}, "
              f"{np.quantile(boot, .975):+.3f}] | {(diff > 0).sum()}/{len(s)} |")


if __name__ == "__main__":
    main()
