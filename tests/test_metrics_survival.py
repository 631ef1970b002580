"""Tests of bayesfuse.metrics.survival: library oracles (scikit-survival, lifelines), controls, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesfuse.exceptions import DataError
from bayesfuse.metrics import (
    brier_score,
    concordance_harrell,
    concordance_uno,
    cumulative_dynamic_auc,
    d_calibration,
    integrated_brier_score,
    interval_coverage,
    km_calibration,
    km_greenwood_se,
    surv_at,
    survival_metrics,
)

TOL = 1e-10


def simulate(n, seed, scale=1.0, cens_rate=0.5, round_to=None):
    """Exponential times with rate exp(x @ beta); uniform-exponential censoring; float64."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    rate = np.exp(x @ np.array([0.8, -0.5]))
    t_event = rng.exponential(1.0 / rate) * scale
    t_cens = rng.exponential(1.0 / cens_rate, size=n)
    time = np.minimum(t_event, t_cens)
    if round_to is not None:  # creates tied times
        time = np.maximum(np.round(time / round_to) * round_to, round_to)
    event = t_event <= t_cens
    return time, event, rate


def expo_surv(rate, times):
    return np.exp(-np.outer(rate, times))


def sk_y(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(event=event, time=time)


@pytest.fixture(scope="module")
def data():
    tr_t, tr_e, _ = simulate(300, seed=1)
    t, e, rate = simulate(200, seed=2)
    rng = np.random.default_rng(3)
    noisy_rate = rate * np.exp(rng.normal(scale=0.5, size=rate.shape))
    times = np.quantile(t[e], np.linspace(0.1, 0.8, 12))
    return dict(tr_t=tr_t, tr_e=tr_e, t=t, e=e, rate=noisy_rate, times=times)


# ------------------------------------------------------------------------------- concordance
def test_harrell_matches_sksurv(data):
    sk = pytest.importorskip("sksurv.metrics")
    risk = data["rate"]
    ours = concordance_harrell(data["t"], data["e"], risk)
    ref = sk.concordance_index_censored(data["e"], data["t"], risk)[0]
    assert abs(ours - ref) < TOL
    assert 0.6 < ours < 0.9  # informative risk, right sign
    assert abs(concordance_harrell(data["t"], data["e"], -risk) - (1 - ours)) < TOL


@pytest.mark.parametrize("tau", [None, "q70"])
@pytest.mark.parametrize("ties", [False, True])
def test_uno_matches_sksurv(tau, ties):
    sk = pytest.importorskip("sksurv.metrics")
    rd = 0.1 if ties else None
    tr_t, tr_e, _ = simulate(300, seed=11, round_to=rd)
    t, e, rate = simulate(250, seed=12, round_to=rd)
    risk = np.round(np.log(rate), 1) if ties else np.log(rate)  # tied risks too
    # keep test events inside the training follow-up (required by both implementations)
    keep = t < tr_t.max()
    t, e, risk = t[keep], e[keep], risk[keep]
    tau_v = None if tau is None else float(np.quantile(t, 0.7))
    ours = concordance_uno(tr_t, tr_e, t, e, risk, tau=tau_v)
    ref = sk.concordance_index_ipcw(sk_y(tr_t, tr_e), sk_y(t, e), risk, tau=tau_v)[0]
    assert abs(ours - ref) < TOL, (ours, ref)
    assert ours > 0.6


def test_uno_beyond_training_followup_is_explained():
    tr_t, tr_e, _ = simulate(100, seed=5)
    t, e, rate = simulate(100, seed=6)
    t = t.copy()
    e = e.copy()
    t[0], e[0] = tr_t.max() * 2, True
    with pytest.raises(DataError, match="tau"):
        concordance_uno(tr_t, tr_e, t, e, rate)


# --------------------------------------------------------------------------- AUC and Brier
@pytest.mark.parametrize("two_d", [False, True])
def test_cumulative_dynamic_auc_matches_sksurv(data, two_d):
    sk = pytest.importorskip("sksurv.metrics")
    times = data["times"]
    risk = 1 - expo_surv(data["rate"], times) if two_d else data["rate"]
    ours = cumulative_dynamic_auc(data["tr_t"], data["tr_e"], data["t"], data["e"], risk, times)
    auc, mean_auc = sk.cumulative_dynamic_auc(sk_y(data["tr_t"], data["tr_e"]), sk_y(data["t"], data["e"]),
                                              risk, times)
    assert np.max(np.abs(ours.auc - auc)) < TOL
    assert abs(ours.mean_auc - mean_auc) < TOL
    assert np.all(ours.auc > 0.6)


def test_cumulative_dynamic_auc_with_ties_matches_sksurv():
    sk = pytest.importorskip("sksurv.metrics")
    tr_t, tr_e, _ = simulate(300, seed=21, round_to=0.1)
    t, e, rate = simulate(200, seed=22, round_to=0.1)
    risk = np.round(rate, 1)
    times = np.quantile(t[e], [0.2, 0.5, 0.7])
    ours = cumulative_dynamic_auc(tr_t, tr_e, t, e, risk, times)
    auc, mean_auc = sk.cumulative_dynamic_auc(sk_y(tr_t, tr_e), sk_y(t, e), risk, times)
    assert np.max(np.abs(ours.auc - auc)) < TOL and abs(ours.mean_auc - mean_auc) < TOL


@pytest.mark.parametrize("ties", [False, True])
def test_brier_and_ibs_match_sksurv(data, ties):
    sk = pytest.importorskip("sksurv.metrics")
    if ties:
        tr_t, tr_e, _ = simulate(300, seed=31, round_to=0.1)
        t, e, rate = simulate(200, seed=32, round_to=0.1)
        times = np.unique(np.quantile(t[e], np.linspace(0.1, 0.8, 8)))
    else:
        tr_t, tr_e, t, e, rate, times = (data[k] for k in ("tr_t", "tr_e", "t", "e", "rate", "times"))
    surv = expo_surv(rate, times)
    ours = brier_score(tr_t, tr_e, t, e, surv, times)
    _, ref = sk.brier_score(sk_y(tr_t, tr_e), sk_y(t, e), surv, times)
    assert np.max(np.abs(ours - ref)) < TOL
    ibs = integrated_brier_score(tr_t, tr_e, t, e, surv, times)
    ref_ibs = sk.integrated_brier_score(sk_y(tr_t, tr_e), sk_y(t, e), surv, times)
    assert abs(ibs - ref_ibs) < TOL
    # an uninformative prediction (S = 0.5 everywhere) scores worse
    assert ibs < integrated_brier_score(tr_t, tr_e, t, e, np.full_like(surv, 0.5), times)


def test_brier_all_training_events_means_unit_weights():
    # no censoring in training: G = 1, so BS is the plain mean squared error against 1[T > t]
    rng = np.random.default_rng(7)
    tr_t = rng.exponential(size=50)
    tr_e = np.ones(50, bool)
    t = rng.exponential(size=40)
    e = np.ones(40, bool)
    times = np.quantile(t, [0.2, 0.5])
    surv = rng.uniform(size=(40, 2))
    expected = np.mean((surv - (t[:, None] > times[None, :])) ** 2, axis=0)
    assert np.max(np.abs(brier_score(tr_t, tr_e, t, e, surv, times) - expected)) < TOL


# --------------------------------------------------------------------------------- D-calibration
def dcal_reference(s, event, n_bins):
    """Literal per-patient transcription of Haider et al. (2020), Sec. 4 (blurred censored mass)."""
    edges = np.linspace(0, 1, n_bins + 1)
    counts = np.zeros(n_bins)
    for si, ei in zip(s, event):
        for k in range(n_bins):
            lo, hi = edges[k], edges[k + 1]
            in_bin = (lo <= si < hi) or (k == n_bins - 1 and si == 1.0)
            if ei:
                counts[k] += 1.0 if in_bin else 0.0
            elif si == 0:
                counts[k] += 1.0 if k == 0 else 0.0
            elif in_bin:
                counts[k] += (si - lo) / si
            elif hi <= si:
                counts[k] += (hi - lo) / si
    return counts


def test_d_calibration_matches_literal_reference():
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    s = rng.uniform(size=300)
    s[:5] = [0.0, 1.0, 0.3, 0.1, 0.95]  # edges and zero
    event = rng.uniform(size=300) < 0.6
    event[:2] = False
    res = d_calibration(s, event, n_bins=10)
    ref = dcal_reference(s, event, 10)
    assert np.max(np.abs(res.counts - ref)) < 1e-12
    assert abs(res.counts.sum() - 300) < 1e-9
    assert abs(res.statistic - chisquare(ref).statistic) < 1e-9


def test_d_calibration_uncensored_is_a_histogram():
    from scipy.stats import chisquare

    rng = np.random.default_rng(1)
    s = rng.beta(2, 1, size=400)
    res = d_calibration(s, np.ones(400, bool), n_bins=5)
    hist, _ = np.histogram(s, bins=np.linspace(0, 1, 6))
    np.testing.assert_array_equal(res.counts, hist)
    chi = chisquare(hist)
    assert abs(res.p_value - chi.pvalue) < 1e-12 and res.p_value < 1e-3


def test_d_calibration_hand_example():
    # censored at S = 0.5 with 4 bins: half of the mass in [0, .25), half in [.25, .5)
    res = d_calibration([0.5, 0.9], [False, True], n_bins=4)
    np.testing.assert_allclose(res.counts, [0.5, 0.5, 0.0, 1.0], atol=1e-12)


def test_d_calibration_positive_control():
    # times drawn from the very model whose S is evaluated, independent random censoring
    passes = 0
    for seed in range(20):
        t, e, rate = simulate(500, seed=100 + seed)
        passes += d_calibration(np.exp(-rate * t), e).p_value > 0.05
    assert passes >= 16, passes


def test_d_calibration_negative_control():
    for seed in range(10):
        t, e, rate = simulate(500, seed=200 + seed, scale=2.0)  # model ignores the factor 2
        assert d_calibration(np.exp(-rate * t), e).p_value < 0.05


# ------------------------------------------------------------------------------ KM calibration
def test_km_calibration_groups_and_km_match_lifelines(data):
    from lifelines import KaplanMeierFitter

    t, e = data["t"], data["e"]
    times = np.linspace(0.05, 2.0, 40)
    surv = expo_surv(data["rate"], times)
    horizon = 0.5
    df = km_calibration(t, e, surv, times, horizon, groups=3)
    assert list(df.columns) == ["group", "n", "n_events", "risk_min", "risk_max", "predicted", "km",
                                "km_lower", "km_upper"]
    assert df["n"].sum() == len(t) and df["n"].max() - df["n"].min() <= 1
    assert np.all(np.diff(df["predicted"]) < 0)  # group 0 = lowest risk
    assert np.all(df["risk_max"].to_numpy()[:-1] <= df["risk_min"].to_numpy()[1:])
    # KM of the lowest-risk group by hand with lifelines
    s_h = surv_at(surv, times, horizon)
    low = s_h >= np.sort(s_h)[::-1][df["n"][0] - 1]
    kmf = KaplanMeierFitter().fit(t[low], e[low])
    assert abs(df["km"][0] - kmf.predict(horizon)) < TOL
    assert np.all((df["km_lower"] <= df["km"]) & (df["km"] <= df["km_upper"]))
    # well specified-ish model: predictions near KM
    assert np.all(np.abs(df["predicted"] - df["km"]) < 0.15)


def test_interval_coverage_good_vs_bad_model():
    t, e, rate = simulate(600, seed=41)
    times = np.linspace(0.05, 2.0, 40)
    rng = np.random.default_rng(42)
    draws = rate[None, :] * np.exp(rng.normal(scale=0.15, size=(200, 1)))  # shared posterior spread
    good = interval_coverage(t, e, np.exp(-draws[:, :, None] * times), times, horizons=[0.3, 0.6, 1.0])
    bad = interval_coverage(t, e, np.exp(-3 * draws[:, :, None] * times), times, horizons=[0.3, 0.6, 1.0])
    assert len(good.table) == 9 and set(good.table["group"]) == {0, 1, 2}
    assert good.coverage >= 7 / 9
    assert bad.coverage <= 1 / 9


def test_km_greenwood_se_matches_lifelines():
    from lifelines import KaplanMeierFitter

    t, e, _ = simulate(300, seed=5, round_to=0.05)  # tied times
    kmf = KaplanMeierFitter().fit(t, e)
    for h in (0.2, 0.7, 1.5):
        sq = kmf._cumulative_sq_
        ref = float(kmf.survival_function_at_times(h).iloc[0]) * np.sqrt(sq.loc[sq.index <= h].iloc[-1])
        assert abs(km_greenwood_se(t, e, h) - ref) < TOL
    assert km_greenwood_se(t, e, 0.5 * t.min()) == 0.0          # before the first event
    # hand value: 4 patients, events at 1 and 2, censored at 3 and 4: S(2) = 3/4 * 2/3 = 1/2,
    # Greenwood sum 1/(4*3) + 1/(3*2) = 1/4 -> se = 1/2 * 1/2
    assert abs(km_greenwood_se([1.0, 2.0, 3.0, 4.0], [1, 1, 0, 0], 2.5) - 0.25) < TOL


def test_interval_coverage_km_error_calibrated_oracle_near_nominal():
    """A model with the TRUE survival and no posterior spread has a zero-width band: plain coverage
    ~0, predictive coverage (band + KM sampling error) ~0.9; a 2x mis-scaled model stays ~0."""
    times = np.linspace(0.05, 2.0, 40)
    plain, pred, bad = [], [], []
    for sd in range(10):
        t, e, rate = simulate(600, seed=100 + sd)
        draws = np.repeat(rate[None], 50, axis=0)[:, :, None]
        hs = [0.3, 0.6, 1.0]
        plain.append(interval_coverage(t, e, np.exp(-draws * times), times, hs).coverage)
        pred.append(interval_coverage(t, e, np.exp(-draws * times), times, hs, km_error=True).coverage)
        bad.append(interval_coverage(t, e, np.exp(-2 * draws * times), times, hs, km_error=True).coverage)
    assert np.mean(plain) <= 0.15
    assert 0.8 <= np.mean(pred) <= 0.98
    assert np.mean(bad) <= 0.15


def test_surv_at_step_function():
    times = np.array([1.0, 2.0, 3.0])
    surv = np.array([[0.9, 0.5, 0.2], [0.8, 0.7, 0.6]])
    np.testing.assert_array_equal(surv_at(surv, times, [0.5, 2.5]), [1.0, 0.7])
    np.testing.assert_array_equal(surv_at(surv, times, 3.0), [0.2, 0.6])


def test_survival_metrics_bundle(data):
    times = np.quantile(data["t"], np.linspace(0.05, 0.9, 20))
    surv = expo_surv(data["rate"], times)
    res = survival_metrics(data["tr_t"], data["tr_e"], data["t"], data["e"], surv, times,
                           risk=data["rate"], tau=float(np.quantile(data["t"], 0.8)))
    assert res.n == len(data["t"])
    assert abs(res.harrell_c - concordance_harrell(data["t"], data["e"], data["rate"])) < TOL
    assert 0.6 < res.uno_c < 0.9 and 0 < res.ibs < 0.25 and 0 <= res.dcal_p_value <= 1
    # default risk (minus restricted mean survival) orders patients like the rate here
    res2 = survival_metrics(data["tr_t"], data["tr_e"], data["t"], data["e"], surv, times,
                            tau=float(np.quantile(data["t"], 0.8)))
    assert abs(res2.harrell_c - res.harrell_c) < TOL


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(time=[1.0, -2.0, 3.0]), "negative or zero"),
        (dict(time=[1.0, 0.0, 3.0]), "negative or zero"),
        (dict(time=[1.0, np.nan, 3.0]), "NaN"),
        (dict(event=[1, 0]), "lengths mismatched"),
        (dict(event=[1, 2, 0]), "0/1"),
        (dict(risk=[0.1, 0.2]), "lengths mismatched"),
    ],
)
def test_input_errors_are_explained(kwargs, match):
    args = dict(time=[1.0, 2.0, 3.0], event=[1, 0, 1], risk=[0.3, 0.2, 0.1]) | kwargs
    with pytest.raises(DataError, match=match):
        concordance_harrell(**args)


def test_brier_errors(data):
    t, e, times = data["t"], data["e"], data["times"]
    surv = expo_surv(data["rate"], times)
    with pytest.raises(DataError, match="shape"):
        brier_score(data["tr_t"], data["tr_e"], t, e, surv[:, :-1], times)
    with pytest.raises(DataError, match="follow-up"):
        brier_score(data["tr_t"], data["tr_e"], t, e, surv, times + t.max())
    with pytest.raises(DataError, match="outside"):
        brier_score(data["tr_t"], data["tr_e"], t, e, surv + 1, times)
    with pytest.raises(DataError, match="increasing"):
        brier_score(data["tr_t"], data["tr_e"], t, e, surv, times[::-1])
    with pytest.raises(DataError, match="two times"):
        integrated_brier_score(data["tr_t"], data["tr_e"], t, e, surv[:, :1], times[:1])
    with pytest.raises(DataError, match="n_bins"):
        d_calibration([0.2, 0.4], [1, 0], n_bins=1)
    assert isinstance(km_calibration(t, e, surv, times, times[3]), pd.DataFrame)
