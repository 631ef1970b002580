"""DeepEnsemble with a survival head: pooled draws are the members' mixture; survival API and metrics work."""

from __future__ import annotations

import numpy as np
import pytest

import bayesfuse as bf
from bayesfuse.evaluation.survival_selection import own_time_survival
from bayesfuse.metrics import concordance_harrell


@pytest.fixture(scope="module")
def fitted():
    data, _ = bf.datasets.simulate(n_patients=400, latent_dim=2, n_origins=0, n_subtypes=0, survival_effect=2.0,
                                   seed=3, modalities={"expr": ("gaussian", 12)})
    tr, te = data.subset(split="train"), data.subset(split="test")
    ens = bf.DeepEnsemble(tr, K=2, heads={"survival": bf.heads.Survival(time="time", event="event")},
                          latent_dim=2, hidden=16, device="cpu")
    ens.fit(seed=0, max_epochs=40, kl_warmup_epochs=5, progress=False)
    return ens, te


def test_pooled_survival_draws_are_the_members_draws(fitted):
    ens, te = fitted
    post = ens.predict(te, num_samples=10, seed=4)
    lh = post.draws["survival"]["log_hazard"]
    parts = [m.predict(te, num_samples=5, seed=4 + k).draws["survival"]["log_hazard"]
             for k, m in enumerate(ens.members_)]
    np.testing.assert_array_equal(lh, np.concatenate(parts, axis=0))
    assert not np.allclose(parts[0], parts[1])           # members differ (different seeds)
    times = np.array([20.0, 0.0, 5.0])
    S = post.survival_function("survival", times)
    assert S.shape == (10, te.n_samples, 3) and np.all(np.isfinite(S))
    np.testing.assert_allclose(S[..., 1], 1.0)
    assert post.median_survival("survival").shape == (10, te.n_samples)
    np.testing.assert_allclose(post.risk("survival", 5.0), 1.0 - S[..., 2], atol=1e-6)
    # exact own-time survival of the mixture = average of the members' (equal draws per member)
    t = te.targets["time"].to_numpy(float)
    members = [own_time_survival(m.predict(te, num_samples=5, seed=4 + k), "survival", t)
               for k, m in enumerate(ens.members_)]
    np.testing.assert_allclose(own_time_survival(post, "survival", t), np.mean(members, axis=0), atol=1e-6)


def test_ensemble_risk_discriminates(fitted):
    ens, te = fitted
    post = ens.predict(te, num_samples=40, seed=0)
    t, e = te.targets["time"].to_numpy(float), te.targets["event"].to_numpy(bool)
    risk = -post.restricted_mean_survival("survival", float(np.quantile(t, 0.9))).mean(0)
    assert concordance_harrell(t, e, risk) > 0.7                      # strong simulated effect
    rng = np.random.default_rng(0)
    assert abs(concordance_harrell(t, e, rng.permutation(risk)) - 0.5) < 0.1    # negative control


def test_members_with_different_cuts_are_refused(fitted):
    ens, te = fitted
    spec = ens.members_[1].heads["survival"]
    saved = list(spec.cuts)
    try:
        spec.cuts = [c * 1.1 for c in saved]
        with pytest.raises(ValueError, match="cuts"):
            ens.predict(te, num_samples=4)
    finally:
        spec.cuts = saved
    assert ens.predict(te, num_samples=4).draws["survival"]["log_hazard"].shape[0] == 4
