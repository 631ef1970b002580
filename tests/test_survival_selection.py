"""Validation-based survival-head selection (bayesfuse.evaluation.survival_selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.evaluation.survival_selection import choose_survival_candidate, own_time_survival
from bayesfuse.exceptions import DataError
from bayesfuse.posterior import survival as ps


def _table(scores):
    """scores: {candidate: [(c, p), ...]} -> long table."""
    return pd.DataFrame([{"candidate": k, "split": s, "harrell_c": c, "dcal_p": p}
                         for k, v in scores.items() for s, (c, p) in enumerate(v)])


def test_rule_picks_highest_mean_c_among_calibrated():
    tab = _table({0: [(0.70, 0.5), (0.72, 0.6), (0.71, 0.4)],
                  1: [(0.73, 0.3), (0.74, 0.01), (0.72, 0.7)]})      # one rejection of 3: still calibrated
    best, summ = choose_survival_candidate(tab, 2)
    assert best == 1 and summ["calibrated"].tolist() == [True, True]
    assert summ["n_dcal_fail"].tolist() == [0, 1] and summ["chosen"].tolist() == [False, True]


def test_rule_rejects_candidate_failing_dcal_on_half_the_splits():
    # negative control: the more discriminative candidate is miscalibrated on 2 of 3 splits (tcga_gbmlgg
    # hidden=32 pattern in docs/studies/survival.md) and must lose to the calibrated one
    tab = _table({0: [(0.85, 0.4), (0.85, 0.2), (0.82, 0.3)],
                  1: [(0.85, 0.0), (0.88, 0.9), (0.81, 0.02)]})
    best, summ = choose_survival_candidate(tab, 2)
    assert best == 0 and summ["calibrated"].tolist() == [True, False]


def test_rule_falls_back_to_best_c_when_none_calibrated_and_first_on_ties():
    tab = _table({0: [(0.60, 0.01)], 1: [(0.65, 0.001)]})
    assert choose_survival_candidate(tab, 2)[0] == 1
    tie = _table({0: [(0.70, 0.5)], 1: [(0.70, 0.5)]})
    assert choose_survival_candidate(tie, 2)[0] == 0
    with pytest.raises(DataError, match="candidate 2"):
        choose_survival_candidate(tie, 3)


def test_own_time_survival_matches_direct_evaluation():
    rng = np.random.default_rng(0)
    lh = rng.normal(-1.0, 0.5, (6, 4, 3))

    class _P:
        draws = {"survival": {"log_hazard": lh}}

        @staticmethod
        def survival_cuts(head):
            return np.array([1.0, 2.0])

    t = np.array([0.5, 1.5, 2.5, 4.0])
    got = own_time_survival(_P, "survival", t)
    # by hand: S = exp(-sum_k h_k * overlap_k), mean over draws
    edges = np.array([0.0, 1.0, 2.0, np.inf])
    for i in range(4):
        overlap = np.clip(np.minimum(t[i], edges[1:]) - edges[:-1], 0, None)
        ref = np.exp(-(np.exp(lh[:, i, :]) * overlap).sum(-1)).mean()
        assert abs(got[i] - ref) < 1e-12
        assert abs(got[i] - ps.survival_function(lh[:, i], [1.0, 2.0], t[i]).mean()) < 1e-12
    with pytest.raises(DataError, match="one time per patient"):
        own_time_survival(_P, "survival", t[:3])


@pytest.fixture(scope="module")
def sim_train():
    data, _ = bf.datasets.simulate(n_patients=400, latent_dim=2, n_origins=0, n_subtypes=0, survival_effect=2.0,
                                   seed=3, modalities={"expr": ("gaussian", 12)})
    return data.subset(split="train")


def test_select_end_to_end_on_training_data(sim_train):
    kw = {"max_epochs": 60, "kl_warmup_epochs": 5}
    sel = bf.evaluation.select_survival_head(sim_train, candidates=[{"hidden": 0}, {"hidden": 8}], n_splits=2,
                                             model_kwargs={"latent_dim": 2, "hidden": 16, "device": "cpu"},
                                             fit_kwargs=kw, num_samples=50, seed=5)
    n_lab = int((sim_train.targets["time"].to_numpy(float) > 0).sum())
    assert len(sel.table) == 4 and set(sel.table["split"]) == {0, 1}
    assert (sel.table["n_fit"] + sel.table["n_val"] == n_lab).all()
    assert (sel.table["n_val"] == round(0.2 * n_lab)).all()
    # the survival signal is learned on every validation split (C well above chance)
    assert (sel.table["harrell_c"] > 0.6).all(), sel.table
    assert sel.best == [{"hidden": 0}, {"hidden": 8}][sel.best_index]
    assert sel.head.hidden == sel.best["hidden"] and sel.head.cuts is None     # unfitted spec
    assert sel.summary["chosen"].sum() == 1
    # deterministic given the seed
    sel2 = bf.evaluation.select_survival_head(sim_train, candidates=[{"hidden": 0}, {"hidden": 8}], n_splits=2,
                                              model_kwargs={"latent_dim": 2, "hidden": 16, "device": "cpu"},
                                              fit_kwargs=kw, num_samples=50, seed=5)
    pd.testing.assert_frame_equal(sel.table, sel2.table)


@pytest.mark.parametrize("kwargs, match", [
    ({"candidates": []}, "candidates is empty"),
    ({"candidates": [{"hiden": 3}]}, "Unknown Survival field"),
    ({"heads": {"survival": "categorical"}}, "must be a bf.heads.Survival"),
    ({"validation_fraction": 0.01}, "too few"),
    ({"n_splits": 0}, "n_splits"),
])
def test_select_input_validation(sim_train, kwargs, match):
    with pytest.raises(DataError, match=match):
        bf.evaluation.select_survival_head(sim_train, **kwargs)
