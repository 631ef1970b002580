"""Release check of the abstention and conformal guarantees, on the simulator where the population is known.

``bf.Abstainer`` and ``bf.ConformalSets`` fitted on ``--n-cal`` calibration patients per split and scored on a
fresh simulated population: violation share, coverage, conformal coverage (docs/benchmarks.md). ::

    PYTHONPATH=. python benchmarks/calibration.py [--n-splits 200] [--json out.json]
    PYTHONPATH=. python benchmarks/calibration.py --quick      # smoke run (about 15 s)
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, write_json  # noqa: E402

import bayesfuse as bf  # noqa: E402
from bayesfuse.calibration import coverage, subset_posterior  # noqa: E402


def run(args) -> dict:
    n = args.train + args.pool + args.population
    data, _ = bf.datasets.simulate(n_patients=n, n_subtypes=3, n_origins=0, class_separation=args.separation,
                                   test_fraction=(n - args.train) / n, seed=args.seed)
    train, fresh = data.subset(split="train"), data.subset(split="test")
    t0 = time.perf_counter()
    model = bf.FusionModel(train, heads={"subtype": "categorical"})
    model.fit(seed=args.seed, progress=False, **({"max_epochs": args.max_epochs} if args.max_epochs else {}))
    post = model.predict(fresh, num_samples=args.num_samples, seed=args.seed)
    fit_s = time.perf_counter() - t0
    y = fresh.targets["subtype"]
    ids = np.asarray(post.sample_ids, dtype=object)
    pool_ids, pop_ids = ids[: args.pool], ids[args.pool:]
    population = subset_posterior(post, pop_ids)
    rng = np.random.default_rng(args.seed)
    rows = []
    for s in range(args.n_splits):
        cal = subset_posterior(post, rng.choice(pool_ids, args.n_cal, replace=False))
        row = {"split": s}
        for r in args.max_risk:
            rc = bf.Abstainer(max_risk=r, delta=args.delta).fit(cal, y, head="subtype").risk_coverage(population, y)
            row[f"error@{r}"], row[f"coverage@{r}"] = rc.error, rc.coverage
        sets = bf.ConformalSets(alpha=args.alpha, method="aps", seed=s).fit(cal, y, head="subtype").predict(population)
        row["conformal_coverage"], row["mean_set_size"] = coverage(sets, y), float(sets["size"].mean())
        rows.append(row)
    df = pd.DataFrame(rows)
    # delta + binomial slack: the violation share n_splits Bernoulli(delta) draws exceed with probability 5%
    allowed = float(binom.ppf(0.95, args.n_splits, args.delta) / args.n_splits)
    base_error = float(np.mean(np.asarray(population.predict("subtype"), dtype=object)
                               != y.reindex(pop_ids).to_numpy(dtype=object)))
    summary = [{"max_risk": r, "violation_share": float((df[f"error@{r}"].fillna(0) > r).mean()),
                "allowed": allowed, "mean_coverage": float(df[f"coverage@{r}"].mean()),
                "mean_error_accepted": float(df[f"error@{r}"].mean())} for r in args.max_risk]
    conf = {"alpha": args.alpha, "mean_coverage": float(df["conformal_coverage"].mean()),
            "q05_coverage": float(df["conformal_coverage"].quantile(0.05)),
            "mean_set_size": float(df["mean_set_size"].mean())}
    return {"config": vars(args), "fit_predict_s": fit_s, "base_error": base_error, "abstainer": summary,
            "conformal": conf, "splits": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--population", type=int, default=4000)
    ap.add_argument("--n-cal", type=int, default=500)
    ap.add_argument("--n-splits", type=int, default=200)
    ap.add_argument("--max-risk", type=float, nargs="+", default=[0.05, 0.02])
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--separation", type=float, default=4.0, help="simulate(class_separation=...)")
    ap.add_argument("--num-samples", type=int, default=100)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 splits, 30 epochs, smaller pools")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_splits, args.max_epochs, args.pool, args.population, args.n_cal = 20, 30, 600, 1000, 300
    quiet()
    res = run(args)
    print(f"simulator (separation {args.separation}): base error {res['base_error']:.3f}, "
          f"fit + predict {res['fit_predict_s']:.0f} s, {args.n_splits} calibration draws of {args.n_cal}")
    print(pd.DataFrame(res["abstainer"]).round(3).to_string(index=False))
    c = res["conformal"]
    print(f"conformal (alpha {c['alpha']}): mean coverage {c['mean_coverage']:.3f} (guarantee >= {1 - c['alpha']:.2f}), "
          f"5% quantile {c['q05_coverage']:.3f}, mean set size {c['mean_set_size']:.2f}")
    if args.json:
        write_json(res, args.json)
    return res


if __name__ == "__main__":
    main()
