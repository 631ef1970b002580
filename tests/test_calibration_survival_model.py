"""Slow: SurvivalBound and the survival Abstainer on a fitted FusionModel, checked against the simulator's true times."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.calibration import Abstainer, CalibrationWarning, SurvivalBound, subset_posterior

ALPHA, RISK, DELTA = 0.1, 0.2, 0.1


@pytest.mark.slow
def test_fitted_model_bound_and_abstainer_against_true_times():
    data, truth = bf.datasets.simulate(n_patients=5600, missing_rate=0.2, seed=2)
    ids = data.sample_ids
    train = data.subset(ids=ids[:600])
    model = bf.FusionModel(train, heads={"survival": bf.heads.Survival()}, latent_dim=8)
    model.fit(max_epochs=150, seed=0, progress=False)
    post = model.predict(data.subset(ids=ids[600:]), num_samples=50, seed=0)
    targets = data.targets
    true_t = pd.Series(truth.event_time, index=ids)
    horizon = float(np.median(train.targets.loc[train.targets["event"] == 1, "time"]))
    pool = np.asarray(post.sample_ids, dtype=object)
    test = subset_posterior(post, pool[2000:])            # 3000 fixed test patients, never calibrated on
    t_test = true_t.loc[test.sample_ids].to_numpy()
    cov, viol, n_sel = [], [], []
    rng = np.random.default_rng(0)
    for s in range(40):
        cal = subset_posterior(post, rng.choice(pool[:2000], size=800, replace=False))
        sb = SurvivalBound(alpha=ALPHA, seed=s).fit(cal, targets, "survival", censoring=train.targets)
        cov.append(float((t_test >= sb.predict(test)["lower_bound"].to_numpy()).mean()))
        n_sel.append(sb.n_selected_ / len(cal.sample_ids))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ab = Abstainer(max_risk=RISK, delta=DELTA, seed=s).fit(cal, targets, "survival", horizon=horizon,
                                                                   censoring=train.targets)
        dec = ab.predict(test)
        acc = dec["accepted"].to_numpy()
        wrong = (dec["prediction"].to_numpy() == "high") != (t_test <= horizon)
        viol.append(bool(acc.any() and wrong[acc].mean() > RISK))
    # true event times: no censoring doubt in the check. The 40 calibration draws share one pool of 2,000 and
    # one fixed test set of 3,000, so their mean keeps the sampling error of both (not divided by 40); coverage
    # is exact, not conservative (patients past c0 take the top score), so the slack must be the honest one
    pool_selected = 2000 * float(np.mean(n_sel))
    assert np.mean(cov) >= 1 - ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / 3000 + 1 / pool_selected))
    assert np.mean(cov) <= 1 - ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / 3000 + 1 / pool_selected))
    assert np.mean(viol) <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / 40)
