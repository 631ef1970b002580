"""Tests of bayesfuse.calibration conformal sets (LAC / APS / RAPS, Mondrian)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from bayesfuse.calibration import (
    CalibrationWarning,
    ConformalSets,
    class_coverage,
    coverage,
    subset_posterior,
    to_indicator,
)
from bayesfuse.calibration.conformal import conformal_quantile
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.heads import Categorical
from bayesfuse.posterior import Posterior

CLASSES = np.array(["A", "B", "C", "D"], dtype=object)


def make_post(probs, ids=None):
    S, n, C = probs.shape
    ids = np.array([f"p{i}" for i in range(n)], dtype=object) if ids is None else ids
    return Posterior(sample_ids=ids, heads={"origin": Categorical(column="origin", classes=list(CLASSES[:C]))},
                     draws={"origin": {"probs": probs}}, latent=np.zeros((S, n, 2)), latent_loc=np.zeros((n, 2)),
                     latent_scale=np.ones((n, 2)), presence=pd.DataFrame({"mrna": np.ones(n, bool)}, index=ids),
                     modality_precision=np.ones((n, 1, 2)))


def simulate(n, seed, S=4, C=4):
    """Calibrated posterior with class-dependent difficulty (class D is hard)."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(0.3, 3.0, n)[:, None] * rng.normal(size=(n, C)) + np.array([0.8, 0.5, 0.2, -0.6])
    probs = softmax(logits[None] + 0.3 * rng.normal(size=(S, n, C)), axis=-1)
    pm = probs.mean(0)
    y = (pm.cumsum(1) > rng.uniform(size=n)[:, None]).argmax(1)
    post = make_post(probs)
    return post, pd.Series(CLASSES[y], index=post.sample_ids)


def test_conformal_quantile_rank():
    s = np.arange(1, 20, dtype=float)  # n = 19
    assert conformal_quantile(s, 0.1) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(s, 0.05) == 19.0
    assert conformal_quantile(s, 0.01) == np.inf


def _coverage_run(n_splits, n_cal, alpha=0.1, seed=0):
    post, labels = simulate(n_cal * 8, seed)
    ids = post.sample_ids
    res = {m: [] for m in ("lac", "aps", "raps", "mondrian")}
    per_class, sizes = [], {m: [] for m in res}
    for r in range(n_splits):
        perm = np.random.default_rng([seed, r]).permutation(len(ids))
        cal, test = subset_posterior(post, ids[perm[:n_cal]]), subset_posterior(post, ids[perm[n_cal:]])
        for name in res:
            method = "lac" if name == "mondrian" else name
            cs = ConformalSets(alpha=alpha, method=method, mondrian=name == "mondrian", seed=r)
            sets = cs.fit(cal, labels, head="origin").predict(test)
            res[name].append(coverage(sets, labels))
            sizes[name].append(sets["size"].mean())
            if name == "mondrian":
                per_class.append(class_coverage(sets, labels)["coverage"])
    return ({k: np.array(v) for k, v in res.items()}, pd.concat(per_class, axis=1).T,
            {k: float(np.mean(v)) for k, v in sizes.items()})


def _assert_coverage(n_splits, n_cal, alpha=0.1):
    cov, per_class, sizes = _coverage_run(n_splits, n_cal, alpha)
    for name in ("lac", "aps", "raps", "mondrian"):
        c = cov[name]
        se = c.std(ddof=1) / math.sqrt(len(c))
        print(f"{name}: mean coverage {c.mean():.4f} (target {1 - alpha}, se {se:.4f}), mean set size {sizes[name]:.3f}")
        assert c.mean() >= 1 - alpha - 3 * se
        assert c.mean() <= 1 - alpha + 1 / (n_cal + 1) + 3 * se + (0.01 if name == "mondrian" else 0)
    pc_mean, pc_se = per_class.mean(), per_class.std(ddof=1) / math.sqrt(len(per_class))
    print("Mondrian per-class coverage:", pc_mean.round(4).to_dict())
    assert (pc_mean >= 1 - alpha - 3 * pc_se).all()
    assert sizes["lac"] <= sizes["aps"] + 1e-9  # LAC gives the smallest sets


def test_coverage_lac_aps_raps_mondrian_fast():
    _assert_coverage(n_splits=100, n_cal=300)


@pytest.mark.slow
def test_coverage_lac_aps_raps_mondrian_slow():
    _assert_coverage(n_splits=500, n_cal=1000)


def test_marginal_method_undercovers_hard_class_but_mondrian_does_not():
    # a model over-confident on class D only: marginal LAC under-covers D, Mondrian does not.
    post, labels = simulate(6000, seed=3)
    p = post.probs("origin").copy()
    is_d = (labels == "D").to_numpy()
    p[:, is_d] = p[:, is_d] ** 0.2  # flatten probs of true-D patients -> their label looks unlikely
    p[:, is_d] /= p[:, is_d].sum(-1, keepdims=True)
    p[:, is_d, 3] *= 0.3
    p[:, is_d] /= p[:, is_d].sum(-1, keepdims=True)
    post2 = make_post(p)
    cal, test = subset_posterior(post2, post2.sample_ids[:3000]), subset_posterior(post2, post2.sample_ids[3000:])
    marg = class_coverage(ConformalSets(0.1, "lac").fit(cal, labels, "origin").predict(test), labels)
    mond = class_coverage(ConformalSets(0.1, "lac", mondrian=True).fit(cal, labels, "origin").predict(test), labels)
    assert marg.loc["D", "coverage"] < 0.8
    assert mond.loc["D", "coverage"] > 0.85


def test_predict_format_and_indicator():
    post, labels = simulate(400, seed=1)
    cs = ConformalSets(alpha=0.1, method="aps").fit(subset_posterior(post, post.sample_ids[:200]), labels, "origin")
    test = subset_posterior(post, post.sample_ids[200:])
    sets = cs.predict(test)
    assert list(sets.index) == list(test.sample_ids) and {"set", "size"} <= set(sets.columns)
    assert (sets["size"] == sets["set"].map(len)).all()
    pm = test.mean_probs("origin")
    for pid, s in sets["set"].items():  # ordered by probability
        probs = pm.loc[pid, s].to_numpy()
        assert (np.diff(probs) <= 1e-12).all()
    ind = cs.to_indicator(sets)
    assert ind.shape == (200, 4) and ind.dtypes.eq(bool).all()
    pd.testing.assert_frame_equal(ind, cs.predict_indicator(test))
    pd.testing.assert_frame_equal(ind, to_indicator(sets))
    # seeded: same seed -> same sets; different seed -> (generally) different randomisation
    again = ConformalSets(alpha=0.1, method="aps").fit(subset_posterior(post, post.sample_ids[:200]), labels, "origin")
    pd.testing.assert_frame_equal(again.predict(test), sets)


def test_conformal_errors():
    post, labels = simulate(100, seed=2)
    with pytest.raises(ValueError, match="alpha"):
        ConformalSets(alpha=1.2)
    with pytest.raises(ValueError, match="method"):
        ConformalSets(method="thr")
    with pytest.raises(NotFittedError):
        ConformalSets().predict(post)
    with pytest.raises(DataError, match="not by position"):
        ConformalSets().fit(post, labels.iloc[:50], "origin")
    bad = labels.copy()
    bad.iloc[0] = "E"
    with pytest.raises(DataError, match="not classes"):
        ConformalSets().fit(post, bad, "origin")
    sets = ConformalSets(0.2).fit(post, labels, "origin").predict(post)
    with pytest.raises(DataError, match="no label"):
        coverage(sets, labels.iloc[:10])
    with pytest.warns(CalibrationWarning, match="too few"):
        ConformalSets(alpha=0.001).fit(post, labels, "origin")
