"""Abstainer on a survival head (high / low call at a horizon) and on several heads jointly."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _survival_posteriors import UniformCensoring, cohort

import bayesfuse as bf
from bayesfuse.calibration import (
    ABSTAIN,
    Abstainer,
    CalibrationWarning,
    default_grid,
    ltt_fixed_sequence,
    ltt_multi_risk,
)
from bayesfuse.calibration.survival_abstain import survival_calls
from bayesfuse.exceptions import DataError

HORIZON, RISK, DELTA = 1.0, 0.1, 0.1


def _truth_wrong(dec, T, horizon=HORIZON):
    return (dec["prediction"].to_numpy() == "high") != (T <= horizon)


def _violation_runs(n_runs, *, weibull_shape=None, plug_in=False, n_cal=500):
    """Share of runs whose population wrong-call rate among accepted exceeds RISK (true T, no censoring doubt)."""
    pop = cohort(20000, 999, weibull_shape=weibull_shape, prefix="pop")
    viol, cov = [], []
    for r in range(n_runs):
        cal = cohort(n_cal, 200 + r, weibull_shape=weibull_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ab = Abstainer(max_risk=RISK, delta=DELTA, seed=r).fit(cal.post, cal.targets, "survival",
                                                                    horizon=HORIZON, censoring=UniformCensoring())
        if plug_in:   # lowest threshold whose empirical error among the calibration patients followed to the horizon <= RISK
            _, high, sc = survival_calls(cal.post, "survival", HORIZON)
            from bayesfuse.calibration.survival_abstain import survival_errors

            err, elig = survival_errors(high, cal.targets["time"].to_numpy(), cal.targets["event"].to_numpy(bool),
                                        np.ones(n_cal, bool), HORIZON, UniformCensoring(),
                                        np.random.default_rng(r))
            order = np.argsort(-sc[elig], kind="stable")
            rate = np.cumsum(err[elig][order]) / np.arange(1, elig.sum() + 1)
            ok = np.flatnonzero(rate <= RISK)
            thr = sc[elig][order][ok[-1]] if len(ok) else np.inf
            _, high_p, sc_p = survival_calls(pop.post, "survival", HORIZON)
            acc = sc_p >= thr
            wrong = high_p != (pop.T <= HORIZON)
        else:
            dec = ab.predict(pop.post)
            acc = dec["accepted"].to_numpy()
            wrong = _truth_wrong(dec, pop.T)
        viol.append(bool(acc.any() and wrong[acc].mean() > RISK))
        cov.append(float(acc.mean()))
    return np.array(viol), np.array(cov)


def test_positive_control_survival_abstainer_is_valid():
    viol, cov = _violation_runs(100)
    assert viol.mean() <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 100)
    assert cov.mean() > 0.2                     # not vacuous: it answers a good share of patients


def test_negative_control_plug_in_without_ltt_violates():
    viol, _ = _violation_runs(60, plug_in=True)
    assert viol.mean() > DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 60)


def test_negative_control_overconfident_model():
    """Log-time bands shrunk 3x: its own risk estimate says it is nearly always right, which is false;
    LTT on the same over-confident model stays valid."""
    pop = cohort(20000, 998, weibull_shape=3.0, prefix="pop")
    _, high, sc = survival_calls(pop.post, "survival", HORIZON)
    wrong = high != (pop.T <= HORIZON)
    conf = np.sort(sc)[::-1]
    self_risk = np.cumsum(1 - conf) / np.arange(1, len(conf) + 1)
    thr = conf[np.flatnonzero(self_risk <= RISK)[-1]]
    assert wrong[sc >= thr].mean() > RISK + 0.05            # self-reported plug-in fails
    viol, _ = _violation_runs(60, weibull_shape=3.0)
    assert viol.mean() <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 60)


def test_survival_predict_and_risk_coverage_columns():
    cal, test = cohort(800, 1), cohort(2000, 2, prefix="t")
    train = cohort(2000, 3, prefix="tr")
    ab = Abstainer(max_risk=RISK, delta=DELTA).fit(cal.post, cal.targets, "survival", horizon=HORIZON,
                                                   censoring=train.targets)
    assert ab.kind_ == "survival" and ab.certified_ and np.isfinite(ab.threshold_)
    dec = ab.predict(test.post)
    assert list(dec.columns) == ["label", "score", "accepted", "prediction", "risk", "threshold", "reason"]
    assert set(dec["label"]) <= {"high", "low", ABSTAIN}
    assert (dec.loc[~dec["accepted"], "label"] == ABSTAIN).all()
    assert np.array_equal(dec["prediction"] == "high", dec["risk"] >= 0.5)
    rc = ab.risk_coverage(test.post, test.targets)
    assert rc.n == 2000 and rc.n_accepted == int(dec["accepted"].sum())
    true_err = _truth_wrong(dec, test.T)[dec["accepted"].to_numpy()].mean()
    assert abs(rc.error_ipcw - true_err) < 0.03
    for words in ("wrong high/low calls at horizon 1", "followed to the horizon", "independent of the survival time"):
        assert words in ab.guarantee_
    with warnings.catch_warnings():   # nearly identical draws: most band scores are 1 (ties), may certify nothing
        warnings.simplefilter("ignore", CalibrationWarning)
        band = Abstainer(max_risk=RISK, delta=DELTA, survival_score="band").fit(cal.post, cal.targets, "survival",
                                                                               horizon=HORIZON)
    assert band.predict(test.post)["score"].between(0, 1).all()


# ---------------------------------------------------------------------------- multi-risk LTT
def test_ltt_multi_risk_with_one_risk_certifies_like_fixed_sequence():
    rng = np.random.default_rng(0)
    for _rep in range(30):
        n = 400
        s = rng.uniform(0.5, 1, n)
        e = rng.uniform(size=n) > s
        keep = rng.uniform(size=n) < 0.8
        for starts in (1, 4):
            one = ltt_fixed_sequence(s, e, 0.1, 0.1, grid=default_grid(2), eligible=keep, starts=starts)
            multi = ltt_multi_risk(s, {"a": e}, {"a": keep}, {"a": 0.1}, 0.1, grid=default_grid(2), starts=starts)
            assert np.array_equal(one.grid, multi.grid)
            assert np.array_equal(one.certified, multi.certified)
            assert np.allclose(one.p_values, multi.p_joint)


def test_joint_p_value_is_the_largest():
    rng = np.random.default_rng(1)
    s = rng.uniform(0.5, 1, 500)
    e1, e2 = rng.uniform(size=500) > s, rng.uniform(size=500) > 0.97
    res = ltt_multi_risk(s, {"a": e1, "b": e2}, {"a": np.ones(500, bool), "b": np.ones(500, bool)},
                         {"a": 0.1, "b": 0.05}, 0.1)
    assert np.allclose(res.p_joint, np.maximum(res.p_values["a"], res.p_values["b"]))
    if res.any_certified:
        j = res.chosen
        assert res.n_joint[j] >= res.n_accepted["a"][j]


# ---------------------------------------------------------------------------- several heads
def test_multi_head_joint_guarantee_and_missing_targets():
    pop = cohort(20000, 997, n_classes=3, prefix="pop")
    levels = {"subtype": 0.05, "survival": 0.15}      # unequal: the level-relative joint scale matters
    viol, cov, certified = [], [], None
    for r in range(60):
        cal = cohort(700, 300 + r, n_classes=3)
        t = cal.targets.copy()
        t.loc[t.index[:100], "subtype"] = np.nan                 # some labels missing ...
        t.loc[t.index[50:150], ["time", "event"]] = np.nan         # ... and some outcomes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ma = Abstainer(max_risk=levels, delta=DELTA, seed=r).fit(cal.post, t, horizon=HORIZON,
                                                                      censoring=UniformCensoring())
        assert ma.joint_.n_eligible_["subtype"] == 600
        assert ma.joint_.n_eligible_["survival"] <= 600
        dec = ma.predict(pop.post)
        acc = dec["accepted"].to_numpy()
        err_sub = dec["subtype_call"].to_numpy() != pop.targets["subtype"].to_numpy()
        err_surv = (dec["survival_call"].to_numpy() == "high") != (pop.T <= HORIZON)
        viol.append(bool(acc.any() and (err_sub[acc].mean() > levels["subtype"]
                                        or err_surv[acc].mean() > levels["survival"])))
        cov.append(acc.mean())
        certified = ma if ma.certified_ else certified
    assert np.mean(viol) <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 60)
    assert np.mean(cov) > 0.05
    assert {"subtype", "subtype_call", "subtype_score", "subtype_threshold", "survival", "survival_call",
            "survival_score", "survival_threshold", "survival_risk", "relative_error", "accepted", "kappa",
            "reason"} == set(dec.columns)
    assert (dec.loc[~dec["accepted"], ["subtype", "survival"]] == ABSTAIN).all().all()
    # accepted <=> every head's predicted error <= kappa x its level <=> confidence >= its head threshold
    rel = np.maximum((1 - dec["subtype_score"]) / 0.05, (1 - dec["survival_score"]) / 0.15)
    assert np.allclose(dec["relative_error"], rel)
    th = ma.head_thresholds_
    both = (dec["subtype_score"] >= th["subtype"] - 1e-12) & (dec["survival_score"] >= th["survival"] - 1e-12)
    assert (dec["accepted"] == both).all() or not ma.certified_
    assert "simultaneously for every head" in certified.guarantee_ and "subtype" in certified.guarantee_
    assert certified.starts_ >= 2 and f"fallback procedure from {certified.starts_} start points" in certified.guarantee_
    rc = ma.risk_coverage(pop.post, pop.targets)
    assert set(rc) == {"subtype", "survival"} and rc["subtype"].n_accepted == int(acc.sum())


def test_categorical_behaviour_unchanged_and_errors():
    c = cohort(600, 5, n_classes=3)
    lab = c.targets["subtype"]
    ab = Abstainer(0.1, 0.1).fit(c.post, lab, "subtype")
    p = c.post.probs("subtype").mean(0)
    codes = np.array([int(x[1:]) for x in lab])
    ref = ltt_fixed_sequence(p.max(1), p.argmax(1) != codes, 0.1, 0.1, grid=default_grid(3))
    assert ab.threshold_ == ref.threshold and ab.kind_ == "categorical"
    assert list(ab.predict(c.post).columns) == ["label", "score", "accepted", "prediction", "threshold", "reason"]
    with pytest.raises(DataError, match="horizon"):
        Abstainer(0.1, 0.1).fit(c.post, c.targets, "survival")
    with pytest.raises(DataError, match="leave head unset"):
        Abstainer({"subtype": 0.1}, 0.1).fit(c.post, c.targets, "subtype")
    with pytest.raises(DataError, match="Pass the head"):
        Abstainer(0.1, 0.1).fit(c.post, lab)
    with pytest.raises(DataError, match="categorical"):
        Abstainer(0.1, 0.1).fit(c.post, lab, "subtype", horizon=1.0)
    with pytest.raises(DataError, match="categorical head only"):
        Abstainer(0.1, 0.1, ood_score="mutual_info").fit(c.post, c.targets, "survival", horizon=1.0)
    with pytest.raises(ValueError, match="single categorical head"):
        Abstainer({"subtype": 0.1}, per_pattern=True)
    with pytest.raises(ValueError, match="max_risk"):
        Abstainer({"subtype": 1.5})
    with pytest.raises(ValueError, match="survival_score"):
        Abstainer(survival_score="width")
    with pytest.raises(DataError, match="lacks"):
        Abstainer({"origin": 0.1}, 0.1).fit(c.post, c.targets)
    with pytest.raises(DataError, match="beyond the censoring model"):
        Abstainer(0.1, 0.1).fit(c.post, c.targets, "survival", horizon=1e6)
    assert isinstance(bf.Abstainer(), Abstainer)
