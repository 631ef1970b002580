"""Shared pieces of the wide-survival study scripts: the zoo's rows and scoring, one record per (row, seed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _common as C  # noqa: E402  (the zoo's harness: scored patients, grid, metrics)
import zoo  # noqa: E402

torch.set_num_threads(1)


def rows(patterns):
    """Zoo survival rows matching ``patterns`` (default: the SurvSet rows)."""
    return zoo.select_rows(zoo.all_rows(), list(patterns) or ["surv:*resplit"], "survival")


def score(train, test, fit_predict):
    """Metrics of ``fit_predict(train, test_eval) -> Posterior`` on the zoo's scored test patients."""
    test_eval, t, e, _, tr_t, tr_e, grid = C.eval_setup(train, test)
    surv_draws, risk, s_own = C.post_outputs(fit_predict(train, test_eval), grid, t)
    return C.metrics(tr_t, tr_e, t, e, risk, surv_draws.mean(0), grid, s_own)


def run(tag, patterns, seeds, fit_predict, prepare=None):
    """Fit and score every row x seed; write ``benchmarks/results/zoo_TAG.json`` (bayesfuse records only)."""
    recs = []
    for row in rows(patterns):
        for seed in seeds:
            train, test, _ = zoo.make_split(row, seed, C.DATA)
            if prepare is not None:
                train, test = prepare(train, test)
            t0 = time.perf_counter()
            extra = {}
            r = {"row": row.name, "seed": seed, "method": "bayesfuse",
                 **score(train, test, lambda tr, te, seed=seed, extra=extra: fit_predict(tr, te, seed, extra)),
                 **extra}
            recs.append(r)
            print(row.name, seed, round(r["harrell_c"], 3), f"{time.perf_counter() - t0:.1f} s", flush=True)
    out = ROOT / "benchmarks" / "results" / f"zoo_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": recs}))
    print(f"JSON: {out}")
