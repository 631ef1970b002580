"""Tests of bayesfuse.calibration: Learn-then-Test abstention (Abstainer, ltt_fixed_sequence)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from scipy.stats import binom

from bayesfuse.calibration import (
    ABSTAIN,
    Abstainer,
    CalibrationWarning,
    binomial_p_values,
    default_grid,
    ltt_fixed_sequence,
    min_certifiable,
    mutual_information,
    subset_posterior,
)
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.heads import Categorical
from bayesfuse.metrics.classification import accuracy
from bayesfuse.posterior import Posterior

CLASSES = np.array(["A", "B", "C"], dtype=object)


def make_post(probs, ids=None, presence=None, classes=CLASSES):
    S, n, C = probs.shape
    ids = np.array([f"p{i}" for i in range(n)], dtype=object) if ids is None else ids
    if presence is None:
        presence = pd.DataFrame({"mrna": np.ones(n, bool)}, index=ids)
    return Posterior(sample_ids=ids, heads={"origin": Categorical(column="origin", classes=list(classes))},
                     draws={"origin": {"probs": probs}}, latent=np.zeros((S, n, 2)),
                     latent_loc=np.zeros((n, 2)), latent_scale=np.ones((n, 2)), presence=presence,
                     modality_precision=np.ones((n, presence.shape[1], 2)))


def simulate(n, seed, S=6, C=3, noise=0.3):
    """Calibrated posterior: labels drawn from the posterior-predictive probabilities.

    Returns per-draw probs (S, n, C), labels (int codes), predictive mean (n, C).
    """
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 5.0, n)
    logits = scale[:, None] * rng.normal(size=(n, C))
    probs = softmax(logits[None] + noise * rng.normal(size=(S, n, C)), axis=-1)
    pm = probs.mean(0)
    y = (pm.cumsum(1) > rng.uniform(size=n)[:, None]).argmax(1)
    return probs, y, pm


def labels_of(post, y):
    return pd.Series(CLASSES[y], index=post.sample_ids)


@pytest.fixture(scope="module")
def pool():
    probs, y, pm = simulate(12000, seed=1)
    post = make_post(probs)
    return post, labels_of(post, y), y, probs


# ------------------------------------------------------------------ LTT core
def test_min_certifiable_matches_formula():
    for r, d in [(0.05, 0.1), (0.1, 0.05), (0.01, 0.2), (0.2, 0.01)]:
        m = min_certifiable(r, d)
        assert m == math.ceil(math.log(d) / math.log(1 - r))
        assert (1 - r) ** m <= d < (1 - r) ** (m - 1)


def test_binomial_p_values_by_hand():
    k = np.array([0, 1, 3, 10])
    m = np.array([45, 60, 100, 100])
    p = binomial_p_values(k, m, 0.05)
    by_hand = [sum(math.comb(mm, i) * 0.05**i * 0.95 ** (mm - i) for i in range(kk + 1)) for kk, mm in zip(k, m)]
    np.testing.assert_allclose(p, by_hand, rtol=1e-10)
    assert binomial_p_values([0], [0], 0.05)[0] == 1.0


def test_ltt_fixed_sequence_by_hand():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.3, 1, 1000)
    err = rng.uniform(size=1000) < (1 - s) * 0.1
    res = ltt_fixed_sequence(s, err, 0.05, 0.1)
    g = default_grid(2)
    n_acc = np.array([(s >= lam).sum() for lam in g])
    start = np.flatnonzero(n_acc >= res.n_min)[0]
    np.testing.assert_array_equal(res.grid, g[start:])
    assert res.n_accepted[0] >= res.n_min and (start == 0 or n_acc[start - 1] < res.n_min)
    for lam, m, e, p in zip(res.grid, res.n_accepted, res.n_errors, res.p_values):
        acc = s >= lam
        assert m == acc.sum() and e == err[acc].sum()
        assert p == pytest.approx(binom.cdf(e, m, 0.05), rel=1e-12)
    first_fail = np.flatnonzero(res.p_values > 0.1)
    n_cert = first_fail[0] if len(first_fail) else len(res.p_values)
    assert res.certified.sum() == n_cert and res.certified[:n_cert].all()
    assert n_cert > 0
    best = res.n_accepted[:n_cert].max()
    assert res.threshold == res.grid[np.flatnonzero(res.n_accepted == best)[0]]


def test_ltt_matches_mapie(pool):
    rc = pytest.importorskip("mapie.risk_control")
    post, labels, y, probs = pool
    cal = subset_posterior(post, post.sample_ids[:1500])
    abst = Abstainer(max_risk=0.05, delta=0.1).fit(cal, labels, head="origin")
    pm = probs[:, :1500].mean(0)
    scores, correct = pm.max(1), (pm.argmax(1) == y[:1500]).astype(int)
    grid = abst.grid_  # the tested sequence, most conservative first
    ctrl = rc.BinaryClassificationController(
        predict_function=lambda X: np.column_stack([1 - X, X]), risk=rc.precision, target_level=0.95,
        confidence_level=0.9, list_predict_params=grid[::-1].copy(), fwer_method="fixed_sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctrl.calibrate(scores, correct)
    p_mapie = np.asarray(ctrl.p_values).ravel()[::-1]
    m, k = abst.ltt_.n_accepted, abst.ltt_.n_errors
    # MAPIE's binary Hoeffding-Bentkus p-value is min(Hoeffding, BinomCDF(ceil(m * r_hat))) with
    # r_hat = 1 - precision in floating point; ceil() sometimes rounds k up to k + 1 and MAPIE
    # then returns the (larger) Hoeffding bound. Where it does not, it equals our exact p-value.
    exact_in_mapie = np.ceil(m * (1 - (m - k) / m)) == k
    assert exact_in_mapie.mean() > 0.5
    np.testing.assert_allclose(p_mapie[exact_in_mapie], abst.p_values_[exact_in_mapie], rtol=1e-9, atol=1e-14)
    assert (abst.p_values_ <= p_mapie * (1 + 1e-9) + 1e-14).all()  # ours is never less powerful
    assert abst.certified_
    valid = np.sort(np.asarray(ctrl.valid_predict_params, float))
    np.testing.assert_allclose(valid, np.sort(grid[abst.ltt_.certified]))
    # same decision: MAPIE's best threshold accepts exactly the same calibration patients
    assert ((scores >= ctrl.best_predict_param) == (scores >= abst.threshold_)).all()


# ----------------------------------------------------------------- Abstainer
def test_abstainer_api(pool):
    post, labels, y, probs = pool
    cal = subset_posterior(post, post.sample_ids[:2000])
    test = subset_posterior(post, post.sample_ids[2000:4000])
    abst = Abstainer(max_risk=0.05, delta=0.1).fit(cal, labels, head="origin")
    assert 1 / 3 < abst.threshold_ < 1 and abst.certified_
    assert abst.n_calibration_ == 2000 and len(abst.grid_) == len(abst.p_values_)
    assert "at most 5%" in abst.guarantee_ and "90%" in abst.guarantee_
    dec = abst.predict(test)
    assert list(dec.index) == list(test.sample_ids)
    assert {"label", "score", "accepted"} <= set(dec.columns)
    assert (dec.loc[~dec.accepted, "label"] == ABSTAIN).all()
    assert dec.loc[dec.accepted, "label"].isin(CLASSES).all()
    assert ((dec.score >= abst.threshold_) == dec.accepted).all()
    rec = abst.risk_coverage(test, labels)
    assert rec.n == 2000 and rec.n_accepted == int(dec.accepted.sum())
    assert rec.coverage == pytest.approx(rec.n_accepted / 2000)
    assert rec.ci_low <= rec.error <= rec.ci_high
    # labels given in shuffled order (alignment by id, not position) give the same record
    assert abst.risk_coverage(test, labels.sample(frac=1, random_state=0)) == rec


def _naive_threshold(scores, max_risk, grid):
    """Plug-in: lowest threshold where the model's own predicted error among accepted <= max_risk."""
    ok = [lam for lam in grid if (scores >= lam).any() and (1 - scores[scores >= lam]).mean() <= max_risk]
    return min(ok) if ok else np.inf


def _validity_run(n_splits, n_cal, seed=0, max_risk=0.05, delta=0.1):
    probs, y, pm = simulate(n_cal * 10, seed=seed, S=4)
    sharp = probs**3
    sharp /= sharp.sum(-1, keepdims=True)  # over-confident model; labels still follow pm
    post, post_sharp = make_post(probs), make_post(sharp)
    labels = labels_of(post, y)
    grid = default_grid(3)
    s_sharp = sharp.mean(0).max(1)
    err_sharp = sharp.mean(0).argmax(1) != y
    viol, viol_sharp, viol_naive, cov, viol_exp = [], [], [], [], []
    s_true = pm.max(1)  # calibrated: P(error | x) = 1 - max_c pm[x, c] exactly
    for r in range(n_splits):
        perm = np.random.default_rng([seed, r]).permutation(len(y))
        c_ids, t_ids = post.sample_ids[perm[:n_cal]], post.sample_ids[perm[n_cal:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            a = Abstainer(max_risk, delta).fit(subset_posterior(post, c_ids), labels, head="origin")
            rec = a.risk_coverage(subset_posterior(post, t_ids), labels)
            a2 = Abstainer(max_risk, delta).fit(subset_posterior(post_sharp, c_ids), labels, head="origin")
            rec2 = a2.risk_coverage(subset_posterior(post_sharp, t_ids), labels)
        viol.append(not rec.within_target)
        viol_sharp.append(not rec2.within_target)
        cov.append(rec.coverage)
        acc_t = s_true[perm[n_cal:]] >= a.threshold_  # expected (label-noise-free) test risk
        viol_exp.append(acc_t.any() and (1 - s_true[perm[n_cal:]][acc_t]).mean() > max_risk)
        lam = _naive_threshold(s_sharp[perm[:n_cal]], max_risk, grid)
        acc = s_sharp[perm[n_cal:]] >= lam
        viol_naive.append(acc.any() and err_sharp[perm[n_cal:]][acc].mean() > max_risk)
    return np.mean(viol), np.mean(viol_sharp), np.mean(viol_naive), np.mean(cov), np.mean(viol_exp)


def _assert_validity(n_splits, n_cal, delta=0.1):
    v, v_sharp, v_naive, cov, v_exp = _validity_run(n_splits, n_cal, delta=delta)
    slack = 3 * math.sqrt(delta * (1 - delta) / n_splits)  # 3 binomial sd
    print(f"LTT violation (calibrated) {v:.3f}, (over-confident) {v_sharp:.3f}, naive plug-in "
          f"(over-confident) {v_naive:.3f}; expected-risk violation (calibrated) {v_exp:.3f}; bound delta + 3sd = {delta + slack:.3f}; mean coverage {cov:.3f}")
    assert v <= delta + slack           # positive control
    assert v_exp <= delta + slack
    assert v_sharp <= delta + slack     # LTT is distribution-free: still valid for a bad model
    assert v_naive > delta + slack      # negative control: no finite-sample correction fails
    assert cov > 0.1                    # and LTT is not vacuous


def test_validity_positive_and_negative_control_fast():
    _assert_validity(n_splits=100, n_cal=800)


@pytest.mark.slow
def test_validity_positive_and_negative_control_slow():
    _assert_validity(n_splits=1000, n_cal=1000)


def test_nothing_certifiable_abstains_everything():
    probs, y, _ = simulate(40, seed=5)  # 40 < n_min = 45 for (0.05, 0.1)
    post = make_post(probs)
    with pytest.warns(CalibrationWarning, match="nothing could be certified"):
        abst = Abstainer(0.05, 0.1).fit(post, labels_of(post, y), head="origin")
    assert abst.threshold_ == np.inf and not abst.certified_
    assert "NOTHING CERTIFIED" in abst.guarantee_
    dec = abst.predict(post)
    assert (~dec.accepted).all() and (dec.label == ABSTAIN).all()
    rec = abst.risk_coverage(post, labels_of(post, y))
    assert rec.n_accepted == 0 and rec.coverage == 0 and np.isnan(rec.error)


def test_nothing_certifiable_with_random_labels():
    # enough patients but a useless model: the first test fails -> nothing certified
    rng = np.random.default_rng(0)
    n = 500
    probs = np.broadcast_to(np.array([0.98, 0.01, 0.01]), (4, n, 3)).copy()
    post = make_post(probs)
    labels = pd.Series(rng.choice(CLASSES, n), index=post.sample_ids)
    with pytest.warns(CalibrationWarning):
        abst = Abstainer(0.05, 0.1).fit(post, labels, head="origin")
    assert not abst.predict(post).accepted.any()


def test_ood_gate_refuses_unseen_class():
    rng = np.random.default_rng(7)
    S = 20
    probs_in, y_in, _ = simulate(1500, seed=8, S=S, noise=0.1)
    n_out = 300
    # unseen class: draws disagree (each draw confidently picks a class; 19 of 20 draws the same
    # one), so the predictive max probability is high (~0.94) but the mutual information is high.
    main = rng.integers(0, 3, n_out)
    pick = np.repeat(main[None], S, axis=0)
    pick[19:] = (main[None] + 1 + rng.integers(0, 2, (S - 19, n_out))) % 3
    probs_out = np.full((S, n_out, 3), 0.005)
    np.put_along_axis(probs_out, pick[..., None], 0.99, axis=-1)
    ids_in = np.array([f"in{i}" for i in range(1500)], dtype=object)
    ids_out = np.array([f"out{i}" for i in range(n_out)], dtype=object)
    cal = make_post(probs_in[:, :1000], ids=ids_in[:1000])
    test = make_post(np.concatenate([probs_in[:, 1000:], probs_out], axis=1), ids=np.r_[ids_in[1000:], ids_out])
    labels = pd.Series(CLASSES[y_in[:1000]], index=ids_in[:1000])
    plain = Abstainer(0.05, 0.1).fit(cal, labels, head="origin")
    gated = Abstainer(0.05, 0.1, ood_score="mutual_info", ood_quantile=0.95).fit(cal, labels, head="origin")
    assert gated.ood_threshold_ is not None and "OOD gate" in gated.guarantee_
    d_plain, d_gated = plain.predict(test), gated.predict(test)
    out = d_gated.index.str.startswith("out")
    assert d_plain.loc[out, "accepted"].mean() > 0.3            # without the gate many are accepted
    assert d_gated.loc[out, "accepted"].mean() < 0.05           # the gate refuses (almost) all
    assert (d_gated.loc[out & ~d_gated.accepted, "reason"] == "out of distribution").mean() > 0.9
    assert (d_gated.loc[~out, "ood"] <= gated.ood_threshold_).mean() > 0.9  # in-distribution pass
    mi = mutual_information(test, "origin")
    assert mi[out].min() > np.quantile(mi[~out], 0.99)


def test_per_pattern_thresholds_and_fallback():
    probs, y, _ = simulate(1300, seed=9)
    ids = np.array([f"p{i}" for i in range(1300)], dtype=object)
    pres = pd.DataFrame({"mrna": True, "methyl": np.arange(1300) < 1000,
                         "wsi": np.arange(1300) >= 1280}, index=ids)
    post = make_post(probs, ids=ids, presence=pres)
    with pytest.warns(CalibrationWarning, match=r"\('mrna', 'wsi'\)"):
        abst = Abstainer(0.05, 0.1, per_pattern=True).fit(post, labels_of(post, y), head="origin")
    assert set(abst.pattern_thresholds_) == {("mrna", "methyl"), ("mrna",)}
    assert abst.fallback_patterns_ == [("mrna", "wsi")]
    dec = abst.predict(post)
    np.testing.assert_array_equal(dec.threshold.to_numpy()[1280:], abst.threshold_)
    assert (dec.threshold.to_numpy()[:1000] == abst.pattern_thresholds_[("mrna", "methyl")]).all()
    assert "Per missingness pattern" in abst.guarantee_
    # each pattern's statement names its own procedure when its start points differ from the pooled one
    for pat, res in abst.pattern_ltt_.items():
        assert res.starts < abst.starts_
        assert f"{'+'.join(pat)}: threshold {res.threshold:.4g} (fallback procedure from {res.starts} " in abst.guarantee_


# --------------------------------------------------------------- input errors
def test_input_errors(pool):
    post, labels, y, probs = pool
    cal = subset_posterior(post, post.sample_ids[:200])
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="max_risk"):
            Abstainer(max_risk=bad)
    with pytest.raises(ValueError, match="delta"):
        Abstainer(delta=1.0)
    with pytest.raises(NotFittedError, match="fit"):
        Abstainer().predict(cal)
    with pytest.raises(DataError, match="not by position"):
        Abstainer().fit(cal, labels.iloc[100:], head="origin")  # ids missing from the Series
    with pytest.raises(DataError, match="pandas Series"):
        Abstainer().fit(cal, labels.to_numpy()[:200], head="origin")
    bad = labels.copy()
    bad.iloc[3] = "Z"
    with pytest.raises(DataError, match=r"\['Z'\] are not classes"):
        Abstainer().fit(cal, bad, head="origin")
    nan = labels.copy().astype(object)
    nan.iloc[5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Abstainer().fit(cal, nan, head="origin")
    with pytest.raises(DataError, match="No head"):
        Abstainer().fit(cal, labels, head="subtype")


def test_mean_probs_rows_sum_to_one_from_float32_draws():
    """float32 draws averaged in float32 drift past the metrics' 1e-6 row-sum tolerance; mean_probs must not."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(1000, 50, len(CLASSES))).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mp = make_post(probs.astype(np.float32)).mean_probs("origin").to_numpy()
    assert mp.dtype == np.float64
    np.testing.assert_allclose(mp.sum(1), 1.0, atol=1e-12, rtol=0)
    np.testing.assert_allclose(mp, probs.astype(np.float64).mean(0), atol=1e-6)
    accuracy(mp, np.zeros(50, int))   # passes the metrics' validation


def test_clopper_pearson_matches_scipy_exact_interval():
    from scipy.stats import binomtest

    from bayesfuse.calibration.selective_risk import clopper_pearson

    for k, n in [(0, 10), (3, 10), (10, 10), (7, 123)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        np.testing.assert_allclose(clopper_pearson(k, n, 0.9), (ci.low, ci.high), atol=1e-12)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
