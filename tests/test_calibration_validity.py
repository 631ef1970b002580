"""Validity of the Learn-then-Test Abstainer on a fitted bayesfuse model, over re-splits.

Fast test (simulator): one model, 1200 held-out patients predicted once, 100 random
calibration / test halves. The share of splits whose test error among accepted exceeds
``max_risk`` must be <= delta plus binomial slack (positive control), also when the
probabilities are deliberately over-confident (LTT does not trust them); an over-confident
model with a naive plug-in threshold must violate it (negative control).

Slow tests (real data, ``-m slow``): the same on cross-fitted tcga_gbmlgg / tcga_rare6
predictions via studies/abstention_validity/calibration.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

import bayesfuse as bf
from bayesfuse.calibration import Abstainer, CalibrationWarning, make_splits, subset_posterior

MAX_RISK, DELTA, N_SPLITS = 0.1, 0.1, 100
ALLOWED = binom.ppf(0.95, N_SPLITS, DELTA) / N_SPLITS  # 95% upper binomial quantile when the rate is delta


def _sharpen_draws(post, head, power=4.0):
    p = np.clip(np.asarray(post.probs(head), dtype=np.float64), 1e-300, None) ** power
    draws = dict(post.draws)
    draws[head] = {**post.draws[head], "probs": p / p.sum(-1, keepdims=True)}
    return dataclasses.replace(post, draws=draws)


def _plugin_self_threshold(conf_cal: np.ndarray, max_risk: float) -> float:
    """Naive rule: trust the model's own risk estimate mean(1 - confidence) among accepted."""
    c = np.sort(conf_cal)[::-1]
    ok = np.flatnonzero(np.cumsum(1 - c) / np.arange(1, len(c) + 1) <= max_risk)
    return float(c[ok[-1]]) if len(ok) else np.inf


@pytest.fixture(scope="module")
def heldout():
    import torch

    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=1600, missing_rate=0.2, class_separation=4.0, seed=11)
    ids = data.sample_ids
    model = bf.FusionModel(data.subset(ids=ids[:400]), heads={"subtype": "categorical"}, latent_dim=8, hidden=64)
    model.fit(max_epochs=40, seed=0, progress=False)
    test = data.subset(ids=ids[400:])
    post = model.predict(test, num_samples=50, seed=0)
    return post, test.targets["subtype"]


def test_ltt_validity_over_resplits_with_negative_control(heldout):
    post, y = heldout
    sharp = _sharpen_draws(post, "subtype")
    classes = post.classes("subtype")
    codes = pd.Index(classes).get_indexer(y.reindex(post.sample_ids).to_numpy())
    p_sharp = sharp.probs("subtype").mean(0)
    base_error = float((post.probs("subtype").mean(0).argmax(1) != codes).mean())
    assert base_error > 2 * MAX_RISK, "the selection must matter for the test to mean anything"

    viol = {"ltt": [], "ltt_4starts": [], "ltt_overconfident": [], "plugin_overconfident": []}
    cover = {k: [] for k in viol}
    ids = pd.Index(np.asarray(post.sample_ids, dtype=object))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        for s in range(N_SPLITS):
            split = make_splits(ids, y, fractions={"calibration": 0.5, "test": 0.5}, seed=s)
            cal = split.to_numpy() == "calibration"
            for key, p, starts in (("ltt", post, 1), ("ltt_4starts", post, 4), ("ltt_overconfident", sharp, 1)):
                ab = Abstainer(max_risk=MAX_RISK, delta=DELTA, starts=starts).fit(subset_posterior(p, ids[cal]), y,
                                                                                  "subtype")
                rc = ab.risk_coverage(subset_posterior(p, ids[~cal]), y)
                viol[key].append(not rc.within_target)
                cover[key].append(rc.coverage)
            thr = _plugin_self_threshold(p_sharp[cal].max(1), MAX_RISK)
            acc = p_sharp[~cal].max(1) >= thr
            err = (p_sharp[~cal].argmax(1) != codes[~cal])[acc].mean() if acc.any() else 0.0
            viol["plugin_overconfident"].append(bool(err > MAX_RISK))
            cover["plugin_overconfident"].append(float(acc.mean()))
    share = {k: float(np.mean(v)) for k, v in viol.items()}
    cov = {k: float(np.mean(v)) for k, v in cover.items()}
    print(f"\nbase error {base_error:.3f}; violation share {share}; mean coverage {cov}; allowed {ALLOWED:.3f}")
    # positive controls: the guarantee holds, and it is not vacuous (patients are accepted)
    assert share["ltt"] <= ALLOWED, share
    assert share["ltt_overconfident"] <= ALLOWED, share
    assert share["ltt_4starts"] <= ALLOWED, share
    certified = float(np.mean(np.array(cover["ltt"]) > 0))
    assert certified > 0.8 and cov["ltt"] > 0.05, (certified, cov)
    # negative control: trusting over-confident probabilities breaks the error target
    assert share["plugin_overconfident"] > 0.5, share
    assert cov["plugin_overconfident"] > cov["ltt"], cov


def _starts_by_hand(n, max_risk, delta, starts):
    """Largest k <= starts whose last start point (2**(k-1) * n_min(delta / k) patients) needs at most n / 2."""
    while starts > 1 and n < 2 ** starts * bf.calibration.min_certifiable(max_risk, delta / starts):
        starts -= 1
    return starts


def _literal_setup(scores, errors, max_risk, delta, grid, starts):
    """Shared by the literal implementations: the descending grid, accepted / error counts per threshold, the
    start points' grid indices and the per-start level (plain loops, no vectorisation)."""
    starts = _starts_by_hand(len(scores), max_risk, delta, starts)
    n_min = bf.calibration.min_certifiable(max_risk, delta / starts)
    grid = sorted(set(grid), reverse=True)
    acc = [int((scores >= g).sum()) for g in grid]
    err = [int(errors[scores >= g].sum()) for g in grid]
    start_idx = []
    for j in range(starts):
        idx = [i for i, a in enumerate(acc) if a >= n_min * 2**j]
        if not idx:
            break
        start_idx.append(idx[0])
    return grid, acc, err, start_idx, delta / starts


def _fixed_sequence_by_hand(scores, errors, max_risk, delta, grid, starts):
    """Literal fallback procedure (Wiens 2003) over the multi-start points."""
    grid, acc, err, start_idx, share = _literal_setup(scores, errors, max_risk, delta, grid, starts)
    weight = [0.0] * len(grid)
    for i in start_idx:
        weight[i] += share
    cert, level = set(), 0.0
    for i in range(len(grid)):
        level = weight[i] + level
        if level > 0 and binom.cdf(err[i], acc[i], max_risk) <= level:
            cert.add(i)
        else:
            level = 0.0
    if not cert:
        return np.inf
    best = max(acc[i] for i in cert)
    return grid[min(i for i in cert if acc[i] == best)]


def _separate_sequences(scores, errors, max_risk, delta, grid, starts):
    """The Bonferroni union of ``starts`` separate fixed sequences at ``delta / starts`` (the fallback's floor)."""
    grid, acc, err, start_idx, share = _literal_setup(scores, errors, max_risk, delta, grid, starts)
    cert = set()
    for first in start_idx:
        for i in range(first, len(grid)):
            if binom.cdf(err[i], acc[i], max_risk) > share:
                break
            cert.add(i)
    return {grid[i] for i in cert}


@pytest.mark.parametrize("starts", [1, 2, 4])
def test_multi_start_ltt_matches_literal_implementation(starts):
    rng = np.random.default_rng(starts)
    certified, strictly_more = 0, 0
    for rep in range(40):
        n = int(rng.integers(150, 1200))
        scores = rng.uniform(0.3, 1, n)
        # error rate rising from ~0 to ~0.2 as confidence falls, plus a few confident errors
        errors = (rng.random(n) < 0.3 * (1 - scores)) | (rng.random(n) < 0.01)
        grid = np.r_[np.linspace(0.3, 1, 141), 0.0]
        res = bf.calibration.ltt_fixed_sequence(scores, errors, 0.1, 0.1, grid=grid, starts=starts)
        assert res.threshold == _fixed_sequence_by_hand(scores, errors, 0.1, 0.1, grid, starts), rep
        # the fallback certifies every threshold the separate sequences at delta / starts certify
        sep = _separate_sequences(scores, errors, 0.1, 0.1, grid, starts)
        assert sep <= set(res.grid[res.certified]), rep
        certified += res.any_certified
        strictly_more += len(sep) < int(res.certified.sum())
    assert certified >= 25                       # the comparison is not vacuous (inf == inf)
    if starts > 1:
        assert strictly_more >= 5                # and the carried level matters on these data


def test_fallback_continues_a_running_sequence_at_the_accumulated_level():
    """A sequence still running at the second start point is tested at 2 delta / starts from there on, so it
    certifies a threshold that two separate sequences at delta / 2 each cannot (and plain LTT at delta can)."""
    n, max_risk, delta = 600, 0.1, 0.1
    scores = np.linspace(1.0, 0.0, n)
    errors = np.zeros(n, dtype=bool)
    errors[60:] = np.arange(n - 60) % 8 == 0       # 12.5% errors beyond the 60 most confident
    grid = np.r_[np.linspace(0.0, 1.0, 301)]
    fb = bf.calibration.ltt_fixed_sequence(scores, errors, max_risk, delta, grid=grid, starts=2)
    sep = _separate_sequences(scores, errors, max_risk, delta, grid, 2)
    assert set(fb.grid[fb.certified]) > sep
    assert fb.threshold == _fixed_sequence_by_hand(scores, errors, max_risk, delta, grid, 2)


def test_multi_start_survives_an_early_confident_error():
    """Plain fixed sequence stops at a single error among the most confident; 4 starts do not."""
    n = 400
    scores = np.linspace(1.0, 0.5, n)
    errors = np.zeros(n, dtype=bool)
    errors[3] = True                      # one wrong answer among the 4 most confident
    errors[200:] = np.arange(200) % 3 == 0  # the low-confidence half is often wrong
    grid = np.r_[np.linspace(0.5, 1, 201), 0.0]
    one = bf.calibration.ltt_fixed_sequence(scores, errors, 0.1, 0.1, grid=grid, starts=1)
    four = bf.calibration.ltt_fixed_sequence(scores, errors, 0.1, 0.1, grid=grid, starts=4)
    assert not one.any_certified
    assert four.any_certified and four.n_accepted[four.chosen] >= 150
    assert four.n_min > one.n_min  # the price: each sequence runs at delta / 4
    with pytest.raises(ValueError, match="starts"):
        bf.calibration.ltt_fixed_sequence(scores, errors, 0.1, 0.1, starts=0)


# ------------------------------------------------------------------------------------ real data
def _bench():
    path = Path(__file__).resolve().parents[1] / "studies" / "abstention_validity" / "calibration.py"
    spec = importlib.util.spec_from_file_location("bench_calibration", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _assert_real_validity(name, target, log_cpm, drop):
    from conftest import dataset_dir

    bench = _bench()
    data = bf.MultiModalData.read_dir(dataset_dir(name), drop_features=drop)
    oof, _, lr, _, _ = bench.crossfit(data, target, 4, 100, 0, 50, log_cpm)
    risks = (0.05, 0.02, 0.01)
    st = bench.resplit_study(name, oof, data.targets[target], target, lr, 100, risks, 0.1, conformal=True)
    rows = pd.DataFrame(st["rows"]).set_index(["method", "max_risk"])
    print(rows[["violation_share", "pool_violation_share", "allowed (delta + slack)", "mean_coverage"]],
          st["base_error"])
    # The guarantee is about the risk of the certified threshold on the population the calibration half is
    # drawn from: here the pool (docs/studies/calibration.md, "Against the pool"). The test-half share
    # ("violation_share") double-counts the calibration draw (the halves are complements in one pool) and is
    # only reported: on the gbmlgg cross-fit it reaches 0.18 at max_risk 0.05 with pool violations 0.00.
    for r in risks:
        for m in ("bayesfuse LTT", "bayesfuse LTT, 4 starts", "over-confident LTT"):
            assert rows.loc[(m, r), "pool_violation_share"] <= rows.loc[(m, r), "allowed (delta + slack)"], \
                rows.loc[(m, r)]
    # negative control, same check, at the largest target below the base error (where the selection matters)
    r_neg = max(r for r in risks if r < st["base_error"])
    assert rows.loc[("over-confident plug-in (self-reported risk)", r_neg), "pool_violation_share"] > 0.5
    # usefulness: the default procedure (Abstainer(starts=4)) on logistic-regression probabilities. Only at 0.05,
    # where every documented cross-fit agrees; at 0.02 one of three gbmlgg cross-fits favours logistic
    # regression (docs/studies/calibration.md), so a single cross-fit cannot carry that claim.
    cov = rows["mean_coverage"]
    assert cov[("bayesfuse LTT, 4 starts", 0.05)] >= cov[("logistic regression LTT, 4 starts", 0.05)] - 0.01
    for c in st["conformal"]:
        assert c["within_binomial_error"], c


@pytest.mark.slow
@pytest.mark.realdata
def test_gbmlgg_subtype_ltt_validity_crossfit():
    _assert_real_validity("tcga_gbmlgg", "subtype", False, {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]})


@pytest.mark.slow
@pytest.mark.realdata
def test_rare6_origin_ltt_validity_crossfit():
    _assert_real_validity("tcga_rare6", "origin", True, None)


def test_effective_starts_drops_start_points_a_small_calibration_set_cannot_use():
    es = bf.calibration.effective_starts
    n_min = bf.calibration.min_certifiable
    # 0.05 / 0.1: one start point needs 45 patients; k start points need 2 * 2**(k-1) * n_min(0.1 / k) patients
    assert es(177, 0.05, 0.1, 4) == 1                      # tcga_rare6's calibration halves: plain fixed sequence
    assert es(2 * 2 * n_min(0.05, 0.05), 0.05, 0.1, 4) == 2
    assert es(2 * 8 * n_min(0.05, 0.025), 0.05, 0.1, 4) == 4
    assert es(10**6, 0.05, 0.1, 1) == 1                    # never more than asked for
    assert es([10**4, 100], [0.05, 0.2], 0.1, 4) == 2        # several risks: every one must afford it
    # a small set gets exactly plain fixed-sequence LTT at the full delta, whatever starts says
    rng = np.random.default_rng(5)
    scores = rng.uniform(0.5, 1, 150)
    errors = rng.random(150) < 0.3 * (1 - scores)
    one = bf.calibration.ltt_fixed_sequence(scores, errors, 0.05, 0.1, starts=1)
    four = bf.calibration.ltt_fixed_sequence(scores, errors, 0.05, 0.1, starts=4)
    assert four.starts == 1 and four.threshold == one.threshold and four.n_min == one.n_min == 45
