"""SurvivalBound (conformalised lower bound on T under censoring) and the censoring model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _survival_posteriors import CUTS, CovariateCensoring, UniformCensoring, cohort

import bayesfuse as bf
from bayesfuse.calibration import (
    KaplanMeierCensoring,
    SurvivalBound,
    conformal_lower_level,
    ipcw_weights,
    select_at_risk,
)
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.posterior import survival as ps

ALPHA = 0.1


# ---------------------------------------------------------------------------- conformal level
def test_conformal_lower_level_unweighted_is_the_order_statistic():
    rng = np.random.default_rng(0)
    for n in (5, 9, 10, 19, 57, 200):
        v = rng.uniform(size=n)
        k = math.floor(ALPHA * (n + 1))
        got = conformal_lower_level(v, np.ones(n), 1.0, ALPHA)
        assert got == (np.sort(v)[k - 1] if k >= 1 else -np.inf)


def test_conformal_lower_level_ties_and_weights():
    v = np.array([0.1, 0.1, 0.1, 0.5, 0.9])
    # test mass 1/6 <= alpha=0.2 with nothing below 0.1 -> 0.1; the tie never splits
    assert conformal_lower_level(v, np.ones(5), 1.0, 0.2) == 0.1
    assert conformal_lower_level(v, np.ones(5), 1.0, 0.1) == -np.inf
    # heavier test weight -> lower (more conservative) level; vector test weights
    got = conformal_lower_level(np.arange(10.0), np.ones(10), np.array([0.1, 1.0, 5.0]), 0.3)
    assert got[0] >= got[1] >= got[2]
    # scaling every weight together changes nothing
    w = np.random.default_rng(1).uniform(0.5, 2, 10)
    a = conformal_lower_level(np.arange(10.0), w, 1.3, 0.25)
    assert a == conformal_lower_level(np.arange(10.0), 7 * w, 7 * 1.3, 0.25)


def test_weighted_conformal_covers_under_covariate_shift():
    """Weighted exchangeability: calibration sampled with probability g(x), test from the population."""
    rng = np.random.default_rng(2)
    miss, miss_unweighted = [], []
    for _ in range(400):
        x = rng.normal(size=4000)
        v = rng.normal(loc=x)                                  # score depends on x
        g = 1 / (1 + np.exp(-2 * x))                           # calibration kept with prob g(x)
        keep = rng.uniform(size=4000) < g
        xc, vc = x[keep][:150], v[keep][:150]
        xt = rng.normal(size=200)
        vt = rng.normal(loc=xt)
        gt = 1 / (1 + np.exp(-2 * xt))
        beta = conformal_lower_level(vc, 1 / (1 / (1 + np.exp(-2 * xc))), 1 / gt, ALPHA)
        miss.append((vt < beta).mean())
        miss_unweighted.append((vt < conformal_lower_level(vc, np.ones(len(vc)), 1.0, ALPHA)).mean())
    sd = math.sqrt(ALPHA * (1 - ALPHA) / (400 * 200))
    assert np.mean(miss) <= ALPHA + 3 * sd
    # negative control: unweighted, the shifted calibration scores (larger x) put the level too high
    assert np.mean(miss_unweighted) > ALPHA + 3 * sd


# ---------------------------------------------------------------------------- censoring model
def test_censoring_km_and_ipcw_weights_match_lifelines():
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(3)
    t = np.round(rng.exponential(10, 400)) + 1.0          # ties on purpose
    e = rng.uniform(size=400) < 0.6
    km = KaplanMeierCensoring.fit(t, e)
    ref = KaplanMeierFitter().fit(t, event_observed=1 - e)
    grid = np.linspace(0, t.max() + 5, 700)
    np.testing.assert_allclose(km.greater(grid), ref.survival_function_at_times(grid).to_numpy(), atol=1e-12)
    # P(C >= t): the left limit of the lifelines step function
    np.testing.assert_allclose(km.at_least(km.times), ref.survival_function_at_times(km.times - 1e-9).to_numpy(),
                               atol=1e-12)
    horizon = 12.0
    w = ipcw_weights(t, e, horizon, km)
    g_event = ref.survival_function_at_times(t - 1e-9).to_numpy()
    g_h = float(ref.survival_function_at_times(horizon - 1e-9).iloc[0])
    expect = np.where(e & (t <= horizon), 1 / g_event, np.where(t >= horizon, 1 / g_h, 0.0))
    np.testing.assert_allclose(w, expect, rtol=1e-12)


def test_ipcw_recovers_the_uncensored_rate():
    c = cohort(20000, 4)
    horizon = 1.0
    w = ipcw_weights(c.targets["time"], c.targets["event"].astype(bool), horizon, UniformCensoring())
    est = float((w * (c.targets["time"] <= horizon) * c.targets["event"]).sum() / len(w))
    truth = float((c.T <= horizon).mean())
    assert abs(est - truth) < 0.015
    assert abs(w.mean() - 1.0) < 0.03                       # E[w] = 1 with the true G


def test_selection_is_independent_of_the_outcome():
    """P(selected | T) = G(c0) whatever T (early events are drawn): the selected set is a random subsample."""
    c = cohort(60000, 5)
    c0 = 2.0
    sel = select_at_risk(c.targets["time"], c.targets["event"], c0, UniformCensoring(), np.random.default_rng(0))
    g = float(UniformCensoring().at_least(c0))
    early, late = c.T < c0, c.T >= c0
    sd = math.sqrt(g * (1 - g) / min(early.sum(), late.sum()))
    assert abs(sel[early].mean() - g) < 4 * sd and abs(sel[late].mean() - g) < 4 * sd
    # every selected patient's min(T, c0) is observed
    assert np.allclose(np.minimum(c.targets["time"].to_numpy()[sel], c0), np.minimum(c.T[sel], c0))


# ---------------------------------------------------------------------------- predictive quantile
def test_predictive_quantile_inverts_the_mixture_cdf():
    c = cohort(50, 6, S=5, noise=0.3)
    lh, cuts = c.post.draws["survival"]["log_hazard"], c.post.survival_cuts("survival")
    q = np.linspace(0.05, 0.6, 50)
    t = ps.predictive_quantile_time(lh, cuts, q, upper=50.0)
    f = 1 - ps.predictive_survival_at(lh, cuts, t)
    assert np.all(f <= q + 1e-12) and np.all(f > q - 1e-6)
    assert np.all(ps.predictive_quantile_time(lh, cuts, 0.0, upper=5.0) == 0)
    assert np.all(ps.predictive_quantile_time(lh, cuts, 0.999999, upper=0.01) == 0.01)


# ---------------------------------------------------------------------------- validity
def _coverage_runs(n_runs, *, weibull_shape=None, censoring="uniform", model=None, n_cal=300, n_test=400,
                   horizon=2.0, plug_in=False):
    cov, heights, strict = [], [], []
    for r in range(n_runs):
        cal = cohort(n_cal, 100 + r, weibull_shape=weibull_shape, censoring=censoring)
        test = cohort(n_test, 10_000 + r, weibull_shape=weibull_shape, censoring=censoring, prefix="t")
        cm = model if model is not None else UniformCensoring()
        if plug_in:       # the model's own alpha-quantile, no calibration
            lh = test.post.draws["survival"]["log_hazard"]
            bound = np.minimum(ps.predictive_quantile_time(lh, test.post.survival_cuts("survival"), ALPHA, horizon),
                               horizon)
        else:
            sb = SurvivalBound(alpha=ALPHA, horizon=horizon, seed=r).fit(cal.post, cal.targets, "survival",
                                                                         censoring=cm)
            bound = sb.predict(test.post)["lower_bound"].to_numpy()
            lh = test.post.draws["survival"]["log_hazard"]
            v = 1 - ps.predictive_survival_at(lh, test.post.survival_cuts("survival"), np.minimum(test.T, horizon))
            strict.append(float((v >= sb.levels(test.post)).mean()))   # the event conformal makes exact
        cov.append(float((test.T >= bound).mean()))
        heights.append(float(bound.mean()))
    return np.array(cov), np.array(heights), np.array(strict)


def _slack(n_runs, n_test, n_sel):
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / n_test + 1 / n_sel) / n_runs)


def test_positive_control_covers_the_true_survival_time():
    cov, _, strict = _coverage_runs(120)
    # against the true T (no censoring doubt); expected >= 1 - alpha
    assert cov.mean() >= 1 - ALPHA - _slack(120, 400, 300 * 0.73)
    # and not conservative: patients past c0 take the top score, so {T >= L} is the score event {V >= beta}
    # and coverage is exact up to the order statistic's 1 / (n_selected + 1) (the score capped at F(c0 | x)
    # instead gave 0.93 here: long survivors counted as misses lowered every bound)
    assert cov.mean() <= 1 - ALPHA + 1 / (300 * 0.73) + _slack(120, 400, 300 * 0.73)
    assert strict.mean() <= cov.mean() + 1e-12


def test_negative_control_overconfident_model_fails_without_conformal_and_is_rescued():
    plug, _, _ = _coverage_runs(40, weibull_shape=3.0, plug_in=True)
    assert plug.mean() < 1 - ALPHA - 0.1                  # log-time bands shrunk 3x: plug-in bound far too high
    conf, _, _ = _coverage_runs(40, weibull_shape=3.0)
    assert conf.mean() >= 1 - ALPHA - _slack(40, 400, 300 * 0.73)


def test_covariate_dependent_censoring_weighted_path():
    cov, _, _ = _coverage_runs(80, censoring="covariate", model=CovariateCensoring(), n_cal=600, horizon=1.5)
    assert cov.mean() >= 1 - ALPHA - _slack(80, 400, 600 * 0.4)


def test_km_from_training_outcomes_and_default_cutoff():
    train = cohort(2000, 7, prefix="tr")
    cal, test = cohort(600, 8), cohort(3000, 9, prefix="t")
    sb = SurvivalBound(alpha=ALPHA).fit(cal.post, cal.targets, "survival", censoring=train.targets)
    assert sb.censoring_source_ == "given outcomes" and sb.horizon_ in set(np.r_[cal.post.survival_cuts("survival"),
                                                                               (np.array(CUTS[1:]) + CUTS[:-1]) / 2])
    pred = sb.predict(test.post)
    assert list(pred.columns) == ["lower_bound", "quantile_level", "cutoff", "at_cutoff"]
    assert (pred["lower_bound"] <= sb.horizon_).all() and (pred["lower_bound"] >= 0).all()
    assert (test.T >= pred["lower_bound"].to_numpy()).mean() >= 1 - ALPHA - 3 * math.sqrt(0.09 / 300)
    rep = sb.coverage(test.post, test.targets)
    assert rep.n == 3000 and rep.n_known <= 3000
    assert rep.coverage_worst_case <= rep.coverage_known + 1e-12
    assert abs(rep.coverage_ipcw - (test.T >= pred["lower_bound"].to_numpy()).mean()) < 0.03
    for words in ("P(T >= L) >= 90%", "c0 =", "independent of the survival time", "marginal"):
        assert words in sb.guarantee_
    # default censoring = Kaplan-Meier of the calibration outcomes, said so
    sb2 = SurvivalBound(alpha=ALPHA, horizon=2.0).fit(cal.post, cal.targets, "survival")
    assert sb2.censoring_source_ == "calibration" and "approximate" in sb2.guarantee_


def test_bounds_increase_with_a_better_model():
    """Usefulness sanity: the true model gives higher bounds than an uninformative one (same coverage)."""
    _, h_good, _ = _coverage_runs(20)
    cov, heights = [], []
    for r in range(20):
        cal, test = cohort(300, 100 + r), cohort(400, 10_000 + r, prefix="t")
        for c in (cal, test):
            lh = c.post.draws["survival"]["log_hazard"]
            c.post.draws["survival"]["log_hazard"] = np.full_like(lh, np.log(0.5))
        sb = SurvivalBound(alpha=ALPHA, horizon=2.0).fit(cal.post, cal.targets, "survival",
                                                         censoring=UniformCensoring())
        b = sb.predict(test.post)["lower_bound"].to_numpy()
        cov.append((test.T >= b).mean())
        heights.append(b.mean())
    assert h_good.mean() > np.mean(heights)
    assert np.mean(cov) >= 1 - ALPHA - _slack(20, 400, 300 * 0.73)


# ---------------------------------------------------------------------------- errors
def test_errors_are_clear():
    c = cohort(100, 11, n_classes=3)
    with pytest.raises(ValueError, match="alpha"):
        SurvivalBound(alpha=1.5)
    with pytest.raises(ValueError, match="horizon"):
        SurvivalBound(horizon=-1.0)
    with pytest.raises(NotFittedError):
        SurvivalBound().predict(c.post)
    with pytest.raises(DataError, match="not a survival head"):
        SurvivalBound().fit(c.post, c.targets, "subtype")
    with pytest.raises(DataError, match="not in targets"):
        SurvivalBound().fit(c.post, c.targets.iloc[10:], "survival")
    bad = c.targets.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match="no usable outcome"):
        SurvivalBound().fit(c.post, bad, "survival")
    with pytest.raises(DataError, match="beyond the censoring model"):
        SurvivalBound(horizon=1e6).fit(c.post, c.targets, "survival")
    with pytest.raises(DataError, match="DataFrame"):
        SurvivalBound().fit(c.post, c.targets["time"], "survival")
    assert isinstance(bf.SurvivalBound(), SurvivalBound)
    assert repr(SurvivalBound(alpha=0.2, horizon=3.0)) == "SurvivalBound(alpha=0.2, horizon=3.0, seed=0)"
