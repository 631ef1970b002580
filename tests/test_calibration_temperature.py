"""Tests of TemperatureScaler and make_splits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from bayesfuse.calibration import CalibrationWarning, TemperatureScaler, make_splits, subset_posterior
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.heads import Categorical
from bayesfuse.posterior import Posterior

CLASSES = np.array(["A", "B", "C"], dtype=object)


def make_post(probs):
    S, n, C = probs.shape
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    return Posterior(sample_ids=ids, heads={"origin": Categorical(column="origin", classes=list(CLASSES))},
                     draws={"origin": {"probs": probs}}, latent=np.zeros((S, n, 2)), latent_loc=np.zeros((n, 2)),
                     latent_scale=np.ones((n, 2)), presence=pd.DataFrame({"mrna": np.ones(n, bool)}, index=ids),
                     modality_precision=np.ones((n, 1, 2)))


def sharpened(n=4000, power=3.0, seed=0, S=8, draw_noise=0.05):
    rng = np.random.default_rng(seed)
    logits = rng.uniform(0.3, 2.0, n)[:, None] * rng.normal(size=(n, 3))
    probs = softmax(logits[None] + draw_noise * rng.normal(size=(S, n, 3)), axis=-1)
    pm = probs.mean(0)
    y = (pm.cumsum(1) > rng.uniform(size=n)[:, None]).argmax(1)
    sharp = probs**power
    sharp /= sharp.sum(-1, keepdims=True)
    post = make_post(sharp)
    return post, pd.Series(CLASSES[y], index=post.sample_ids)


def test_temperature_recovers_power_and_lowers_heldout_nll():
    post, labels = sharpened()
    tune, held = subset_posterior(post, post.sample_ids[:2000]), subset_posterior(post, post.sample_ids[2000:])
    ts = TemperatureScaler().fit(tune, labels, "origin")
    assert 2.6 < ts.temperature_ < 3.4
    assert ts.nll_after_ < ts.nll_before_
    new = ts.transform(held)
    assert new is not held and held.probs("origin") is not new.probs("origin")
    assert TemperatureScaler.nll(new, labels, "origin") < TemperatureScaler.nll(held, labels, "origin") - 0.05
    np.testing.assert_allclose(new.probs("origin").sum(-1), 1.0)
    # the input posterior is untouched
    np.testing.assert_allclose(held.probs("origin"), post.probs("origin")[:, 2000:])


def test_temperature_one_for_calibrated_model():
    post, labels = sharpened(power=1.0, seed=1)
    ts = TemperatureScaler().fit(post, labels, "origin")
    assert 0.85 < ts.temperature_ < 1.15


def test_temperature_errors():
    post, labels = sharpened(n=50)
    with pytest.raises(NotFittedError):
        TemperatureScaler().transform(post)
    with pytest.raises(ValueError, match="bounds"):
        TemperatureScaler(bounds=(2, 5))
    with pytest.raises(DataError, match="not by position"):
        TemperatureScaler().fit(post, labels.iloc[1:], "origin")


def test_temperature_pooled_over_posteriors():
    """A sequence of posteriors is one pooled tuning set (e.g. missingness patterns of the same patients)."""
    sharp, labels = sharpened(n=2000, power=3.0, seed=2)
    calm, labels_c = sharpened(n=2000, power=1.0, seed=2)  # same patients and labels, calibrated draws
    pd.testing.assert_series_equal(labels, labels_c)
    t_sharp = TemperatureScaler().fit(sharp, labels, "origin").temperature_
    t_calm = TemperatureScaler().fit(calm, labels, "origin").temperature_
    pooled = TemperatureScaler().fit([sharp, calm], labels, "origin")
    # the pooled T lies strictly between the two patterns' own temperatures ...
    assert t_calm + 0.2 < pooled.temperature_ < t_sharp - 0.2
    # ... and its objective is the mean NLL over all rows of both posteriors
    both = (TemperatureScaler.nll(sharp, labels, "origin", pooled.temperature_)
            + TemperatureScaler.nll(calm, labels, "origin", pooled.temperature_)) / 2
    np.testing.assert_allclose(pooled.nll_after_, both, rtol=1e-10)
    # a one-element sequence is the same as the posterior itself
    assert TemperatureScaler().fit([sharp], labels, "origin").temperature_ == t_sharp
    with pytest.raises(DataError, match="empty"):
        TemperatureScaler().fit([], labels, "origin")


def test_temperature_warns_when_unidentified():
    """A tuning set without errors drives T to the lower bound: warn instead of silently sharpening to 0/1."""
    post, labels = sharpened(n=300, power=1.0, seed=3)
    correct = pd.Series(CLASSES[post.probs("origin").mean(0).argmax(1)], index=post.sample_ids)
    with pytest.warns(CalibrationWarning, match="cannot identify"):
        ts = TemperatureScaler().fit(post, correct, "origin")
    assert ts.temperature_ < 0.051
    with warnings.catch_warnings():  # identified case: no warning
        warnings.simplefilter("error", CalibrationWarning)
        TemperatureScaler().fit(post, labels, "origin")


# ------------------------------------------------------------------- splits
def test_make_splits_stratified_patient_level():
    rng = np.random.default_rng(0)
    ids = np.array([f"p{i}" for i in range(1000)], dtype=object)
    labels = pd.Series(rng.choice(["A", "B", "C"], 1000, p=[0.6, 0.3, 0.1]), index=ids)
    sp = make_splits(ids, labels, seed=1)
    assert list(sp.index) == list(ids) and set(sp) == {"train", "tune", "calibration", "test"}
    frac = sp.value_counts(normalize=True)
    for k, f in {"train": 0.6, "tune": 0.1, "calibration": 0.15, "test": 0.15}.items():
        assert abs(frac[k] - f) < 0.01
    tab = pd.crosstab(sp, labels.reindex(sp.index))
    assert (tab > 0).all().all()
    # per-stratum proportions follow the fractions
    np.testing.assert_allclose((tab / tab.sum()).loc["train"], 0.6, atol=0.02)
    assert make_splits(ids, labels, seed=1).equals(sp)
    assert not make_splits(ids, labels, seed=2).equals(sp)
    # repeated ids (several samples of one patient) share a split
    rep = np.r_[ids, ids[:50]]
    sp2 = make_splits(rep, labels, seed=1)
    assert (sp2.iloc[:50].to_numpy() == sp2.iloc[1000:].to_numpy()).all()


def test_make_splits_equal_folds_are_balanced():
    """Review fix: with equal fractions every stratum's remainder went to the first split (7 strata of
    15 patients into 4 folds gave 28 / 25 / 25 / 25); remainders now rotate across strata."""
    ids = [f"p{i}" for i in range(103)]
    labels = pd.Series(np.repeat(list("ABCDEFG"), [15, 15, 15, 15, 15, 15, 13]), index=ids)
    sp = make_splits(ids, labels, fractions={f"f{k}": 0.25 for k in range(4)}, seed=0)
    sizes = sp.value_counts()
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 103
    tab = pd.crosstab(labels, sp)
    assert (tab.max(axis=1) - tab.min(axis=1) <= 1).all()     # still stratified within each class


def test_make_splits_small_strata_and_errors():
    ids = [f"p{i}" for i in range(10)]
    labels = pd.Series(["A"] * 6 + ["B"] * 4, index=ids)
    sp = make_splits(ids, labels, seed=0)
    assert (pd.crosstab(sp, labels) > 0).all().all()  # every split has >= 1 patient per stratum
    with pytest.warns(CalibrationWarning, match="fewer patients than splits"):
        make_splits(ids, pd.Series(["A"] * 8 + ["B"] * 2, index=ids))
    with pytest.raises(ValueError, match="sum to"):
        make_splits(ids, fractions={"train": 0.5, "test": 0.4})
    with pytest.raises(ValueError, match="positive"):
        make_splits(ids, fractions={"train": 1.1, "test": -0.1})
    with pytest.raises(DataError, match="no entry"):
        make_splits(ids, labels.iloc[:5])
    nan_lab = labels.astype(object).copy()
    nan_lab.iloc[0] = np.nan
    with pytest.warns(CalibrationWarning, match="missing label"):  # missing labels: own (small) stratum
        assert len(make_splits(ids, nan_lab)) == 10
