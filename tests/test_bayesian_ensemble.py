"""Mixture of K variational posteriors: ``DeepEnsemble.bayesian`` (docs/studies/bayesian.md)."""

import numpy as np
import pytest

import bayesfuse as bf
from bayesfuse.metrics.classification import mutual_information
from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule


@pytest.fixture(scope="module")
def sim():
    data, _ = bf.datasets.simulate(n_patients=160, latent_dim=2, seed=3)
    return data


@pytest.fixture(scope="module")
def ens(sim):
    e = bf.DeepEnsemble.bayesian(sim.subset(split="train"), K=2, heads={"subtype": "categorical"}, latent_dim=2,
                                 hidden=16)
    return e.fit(seed=0, max_epochs=6, kl_warmup_epochs=2, progress=False)


def test_members_are_refitted_bayesian_heads(ens):
    for m in ens.members_:
        head = m.module.heads["subtype"]
        assert isinstance(head, BayesianCategoricalHeadModule)
        assert head.posterior_q.family == "fullrank"      # the package default guide
        assert m.diagnostics_ is not None                 # k-hat of the refitted guide is reported
    # different seeds, different basins: the members' head posteriors differ
    q0, q1 = (m.module.heads["subtype"].posterior_q.loc for m in ens.members_)
    assert not np.allclose(q0.detach().numpy(), q1.detach().numpy())


def test_pooled_draws_are_the_members_draws_and_add_epistemic_uncertainty(sim, ens):
    te = sim.subset(split="test")
    post = ens.predict(te, num_samples=40, seed=5)
    per = [m.predict(te, num_samples=20, seed=5 + k).probs("subtype") for k, m in enumerate(ens.members_)]
    np.testing.assert_array_equal(post.probs("subtype"), np.concatenate(per, axis=0))
    # an equal-weight mixture's MI is >= the members' mean MI (concavity of entropy), strictly
    # where the members disagree
    mi_mix = mutual_information(post.probs("subtype"))
    mi_members = np.mean([mutual_information(p) for p in per], axis=0)
    assert np.all(mi_mix >= mi_members - 1e-6)
    assert np.mean(mi_mix - mi_members) > 1e-3
    # negative control: a "mixture" of one member with itself adds nothing
    mi_self = mutual_information(np.concatenate([per[0], per[0]], axis=0))
    np.testing.assert_allclose(mi_self, mutual_information(per[0]), atol=1e-6)


def test_rejects_point_estimate_modes(sim):
    with pytest.raises(ValueError, match="mixes variational weight posteriors"):
        bf.DeepEnsemble.bayesian(sim.subset(split="train"), K=2, bayesian="none")
    with pytest.raises(ValueError, match="at least 2"):
        bf.DeepEnsemble.bayesian(sim.subset(split="train"), K=1)
    e = bf.DeepEnsemble.bayesian(sim.subset(split="train"), K=2, heads={"subtype": "categorical"}, latent_dim=2)
    assert all(m.bayesian == "heads" for m in e.members_)
