"""Paired-bootstrap helpers of studies/bayesian_heads/bayesian.py (``bootstrap_analysis``; docs/studies/bayesian.md,
"Last candidate and the resolution of the rare6 test set"): synthetic per-patient records only."""

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "studies" / "bayesian_heads" / "bayesian.py"
    spec = importlib.util.spec_from_file_location("bench_bayesian", path)
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # the script silences warnings globally at import: keep that local
        spec.loader.exec_module(mod)
    return mod


B = _load_bench()


def test_half_loss_count():
    assert B._half_loss_count([10.0, 1.0, 1.0, 1.0]) == 1          # one patient carries > half
    assert B._half_loss_count(np.ones(10)) == 5                     # uniform: half the patients
    assert B._half_loss_count([3.0, 3.0, 2.0, 1.0, 1.0]) == 2       # 6 of 10 after two


def test_boot_ci_positive_and_negative_control():
    rs = np.random.default_rng(1)
    shifted = 0.5 + rs.normal(0, 1, 200)                            # true mean difference 0.5
    mean, lo, hi = B._boot_ci(shifted, n_resamples=2000, seed=0)
    assert lo > 0 and lo < mean < hi
    null = rs.normal(0, 1, 200)
    null -= null.mean()                                             # sample mean difference exactly 0
    _, lo0, hi0 = B._boot_ci(null, n_resamples=2000, seed=0)
    assert lo0 < 0 < hi0
    assert B._boot_ci(shifted, seed=0) == B._boot_ci(shifted, seed=0)   # seeded


def test_bootstrap_analysis_on_synthetic_records(tmp_path):
    """Patient 0 is misclassified by every method and seed: it must be reported as such, and the
    pooled difference must split exactly into its share and the rest's."""
    n, seeds = 30, [0, 1]
    rs = np.random.default_rng(0)
    labels = ["a", "b"] * (n // 2)
    y = np.array([0, 1] * (n // 2))
    rec = {"dataset": "toy", "target": "t", "sample_ids": [f"p{i}" for i in range(n)], "labels": labels,
           "classes": ["a", "b"], "seeds": seeds, "p_true": {}, "pred": {}, "nll": {}}
    for j, m in enumerate(B.BOOT_METHODS):
        rec["p_true"][m], rec["pred"][m], rec["nll"][m] = {}, {}, {}
        for s in seeds:
            p = rs.uniform(0.6, 0.99, n)
            p[0] = 0.01 * (j + 1)                                   # always wrong, worse for lower j
            rec["p_true"][m][str(s)] = p.tolist()
            rec["pred"][m][str(s)] = np.where(p > 0.5, y, 1 - y).tolist()
            rec["nll"][m][str(s)] = float(-np.log(p).mean())
    (tmp_path / "bootstrap_toy.json").write_text(json.dumps(rec))
    out = B.bootstrap_analysis(("toy",), out_dir=str(tmp_path))
    errs = out["toy"]["errors"]
    assert [e["sample_id"] for e in errs if e["always_wrong"]] == ["p0"]
    loss = {m: -np.log(np.array([rec["p_true"][m][str(s)] for s in seeds])).mean(0) for m in B.BOOT_METHODS}
    for row in out["differences"]:
        if row["seed"] != "pooled":
            continue
        a = next(m for m in B.BOOT_METHODS if B.BOOT_LABEL[m] == row["method"])
        b = next(m for m in B.BOOT_METHODS if B.BOOT_LABEL[m] == row["minus"])
        assert np.isclose(row["mean_diff"], (loss[a] - loss[b]).mean())
        sp = out["toy"]["difference_split"][f"{row['method']} - {row['minus']}"]
        assert np.isclose(sp["always_wrong"] + sp["rest"], row["mean_diff"])
        assert np.isclose(sp["always_wrong"], (loss[a] - loss[b])[0] / n)
