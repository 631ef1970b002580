"""Cross-fitted Bayesian-heads ensemble (studies/bayesian_heads/_crossfit.py; tried for issue 6, not adopted:
docs/studies/bayesian.md) and the ``patient_weight`` of :func:`refit_head_posterior` it uses."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
import bayesfuse.module.head_refit as head_refit
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Categorical
from bayesfuse.metrics.classification import encode_labels, nll
from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule


def _load_crossfit():
    path = Path(__file__).resolve().parents[1] / "studies" / "bayesian_heads" / "_crossfit.py"
    spec = importlib.util.spec_from_file_location("bench_crossfit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_cf = _load_crossfit()
CrossFittedEnsemble, crossfit_folds = _cf.CrossFittedEnsemble, _cf.crossfit_folds

FAST = {"max_epochs": 6, "kl_warmup_epochs": 2, "progress": False}


@pytest.fixture(scope="module")
def sim():
    data, _ = bf.datasets.simulate(n_patients=160, latent_dim=2, seed=3)
    return data


@pytest.fixture(scope="module")
def ens(sim):
    e = CrossFittedEnsemble(sim.subset(split="train"), K=3, heads={"subtype": "categorical"}, latent_dim=2,
                            hidden=16, head_refit_steps=150)
    return e.fit(seed=0, **FAST)


# ------------------------------------------------------------------------------ patient_weight
def _refit(weight, y, seed=0):
    torch.manual_seed(5)
    head = BayesianCategoricalHeadModule(2, 3, guide="fullrank").double()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((40, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    refit_head_posterior = head_refit.refit_head_posterior
    refit_head_posterior(head, z, torch.full_like(z, 0.1), y, steps=60, generator=g, patient_weight=weight)
    return head.posterior_q.loc.detach().clone()


def test_patient_weight_scales_each_patients_likelihood():
    y = torch.arange(40) % 3
    ones = torch.ones(40, dtype=torch.float64)
    torch.testing.assert_close(_refit(None, y), _refit(ones, y), rtol=0, atol=0)     # weight 1 = unweighted
    w = ones.clone()
    w[20:] = 0.0
    y_flip = y.clone()
    y_flip[20:] = (y_flip[20:] + 1) % 3
    # zero-weight patients' labels do not matter; positive-weight ones do (negative control)
    torch.testing.assert_close(_refit(w, y), _refit(w, y_flip), rtol=0, atol=0)
    assert not torch.allclose(_refit(ones, y), _refit(ones, y_flip))
    assert not torch.allclose(_refit(w, y), _refit(ones, y))
    with pytest.raises(ValueError, match="non-negative"):
        _refit(-ones, y)
    with pytest.raises(ValueError, match="non-negative"):
        _refit(ones[:5], y)


# ------------------------------------------------------------------------------------------- folds
def test_folds_are_disjoint_stratified_balanced_and_cover():
    rs = np.random.RandomState(0)
    lab = pd.Series(rs.choice(list("abcd"), size=103, p=[0.5, 0.3, 0.15, 0.05]), index=[f"s{i}" for i in range(103)])
    lab.iloc[:7] = np.nan                                           # unknown labels form their own stratum
    lab[lab == "d"] = "c" if (lab == "d").sum() < 4 else "d"
    f = crossfit_folds(lab, 4, seed=1)
    assert f.index.equals(lab.index) and set(f) == {0, 1, 2, 3}      # every patient in exactly one fold
    sizes = f.value_counts()
    assert sizes.max() - sizes.min() <= 1
    for c in lab.dropna().unique():                                   # stratified: per-class counts within 1
        cnt = f[lab == c].value_counts().reindex(range(4), fill_value=0)
        assert cnt.min() >= 1 and cnt.max() - cnt.min() <= 1
    pd.testing.assert_series_equal(f, crossfit_folds(lab, 4, seed=1))   # seeded
    assert not f.equals(crossfit_folds(lab, 4, seed=2))


def test_fold_errors_say_what_is_wrong():
    lab = pd.Series(list("aaaabbbbc" "c"), index=[f"s{i}" for i in range(10)])
    with pytest.raises(DataError, match=r"fewer than K=3.*smallest class size \(2\)"):
        crossfit_folds(lab, 3)
    crossfit_folds(lab, 2)                                            # 2 per class is enough for K=2
    with pytest.raises(ValueError, match="K=1"):
        crossfit_folds(lab, 1)
    with pytest.raises(TypeError, match="Series"):
        crossfit_folds(lab.to_numpy(), 2)


def test_constructor_validation(sim):
    tr = sim.subset(split="train")
    kw = {"heads": {"subtype": "categorical"}, "latent_dim": 2}
    with pytest.raises(ValueError, match="K=1"):
        CrossFittedEnsemble(tr, K=1, **kw)
    with pytest.raises(ValueError, match="weight-uncertainty|use one of"):
        CrossFittedEnsemble(tr, K=2, bayesian="none", **kw)
    with pytest.raises(ValueError, match="no categorical head"):
        CrossFittedEnsemble(tr, K=2, latent_dim=2)
    with pytest.raises(ValueError, match="head_refit_steps=0"):
        CrossFittedEnsemble(tr, K=2, head_refit_steps=0, **kw)
    with pytest.raises(ValueError, match="refit_train_weight"):
        CrossFittedEnsemble(tr, K=2, refit_train_weight=-1, **kw)
    small = int(tr.targets["subtype"].value_counts().min())
    with pytest.raises(DataError, match="fewer than K"):
        CrossFittedEnsemble(tr, K=small + 1, **kw)
    e = CrossFittedEnsemble(tr, K=2, **kw)
    with pytest.raises(RuntimeError, match="fit"):
        e.refit_heads()


# -------------------------------------------------------------------------------- members and refit
def test_members_train_outside_their_fold(sim, ens):
    ids = set(sim.subset(split="train").sample_ids)
    held = [set(h) for h in ens.heldout_ids_]
    assert set().union(*held) == ids and sum(map(len, held)) == len(ids)          # a partition
    for k, m in enumerate(ens.members_):
        assert set(m._train_data.sample_ids) == ids - held[k]
        assert m.head_refit_steps == 0                                              # no in-sample refit
        assert set(ens.refit_ids_[k]) <= held[k] and len(ens.refit_ids_[k]) > 0
        assert not set(ens.refit_ids_[k]) & set(m._train_data.sample_ids)
        assert len(ens.refit_train_ids_[k]) == 0


def test_refit_conditions_on_the_held_out_latents_of_its_own_member(sim, ens, monkeypatch):
    seen = []
    orig = head_refit.refit_head_posterior

    def spy(head, loc, scale, y, *a, **kw):
        seen.append((head, loc.clone(), y.clone(), kw.get("patient_weight")))
        return orig(head, loc, scale, y, *a, **kw)

    monkeypatch.setattr(head_refit, "refit_head_posterior", spy)
    ens.refit_heads()
    assert len(seen) == ens.K
    for k, (m, (head, loc, y, w)) in enumerate(zip(ens.members_, seen)):
        assert head is m.module.heads["subtype"] and w is None
        fold = sim.subset(ids=ens.refit_ids_[k])
        post = m.predict(fold, num_samples=2, seed=0)
        np.testing.assert_allclose(loc.numpy(), post.latent_loc, rtol=1e-5, atol=1e-6)   # member k's encoders
        np.testing.assert_array_equal(y.numpy(), encode_labels(fold.targets["subtype"].to_numpy(),
                                                               post.classes("subtype")))
        other = sim.subset(ids=ens.refit_ids_[k])
        q = ens.members_[(k + 1) % ens.K].predict(other, num_samples=2, seed=0).latent_loc
        assert not np.allclose(loc.numpy(), q, atol=1e-3)                            # not another member's
    seen.clear()
    ens.refit_heads(train_weight=0.25)
    for k, (_, loc, _, w) in enumerate(seen):
        n_held, n_tr = len(ens.refit_ids_[k]), len(ens.refit_train_ids_[k])
        assert n_tr == len(ens.members_[k]._train_data.sample_ids) and loc.shape[0] == n_held + n_tr
        np.testing.assert_array_equal(w.numpy(), np.r_[np.ones(n_held), np.full(n_tr, 0.25)])
    ens.refit_heads(train_weight=0.0)


def test_refit_restarts_from_the_svi_guide(ens):
    ens.refit_heads()
    a = [m.module.heads["subtype"].posterior_q.loc.detach().clone() for m in ens.members_]
    ens.refit_heads(in_sample=True)
    b = [m.module.heads["subtype"].posterior_q.loc.detach().clone() for m in ens.members_]
    ens.refit_heads()
    c = [m.module.heads["subtype"].posterior_q.loc.detach().clone() for m in ens.members_]
    for x, y, z in zip(a, b, c):
        torch.testing.assert_close(x, z, rtol=0, atol=0)       # same start, same seed: same guide
        assert not torch.allclose(x, y)                         # in-sample control differs


def test_predict_pools_the_members(sim, ens):
    te = sim.subset(split="test")
    post = ens.predict(te, num_samples=30, seed=4)
    p = post.probs("subtype")
    assert p.shape == (30, te.n_samples, 3)
    assert np.all(p >= 0) and np.allclose(p.sum(-1), 1, atol=1e-5)
    per = [m.predict(te, num_samples=10, seed=4 + k).probs("subtype") for k, m in enumerate(ens.members_)]
    np.testing.assert_array_equal(p, np.concatenate(per, axis=0))


# ---------------------------------------------------------------------- over-fitted encoder control
def _noise_cohort(n, p, seed):
    """Features independent of the labels: an honest head can do no better than 1/3 per class."""
    rs = np.random.RandomState(seed)
    ids = [f"p{seed}-{i}" for i in range(n)]
    x = pd.DataFrame(rs.normal(size=(n, p)), index=ids, columns=[f"g{j}" for j in range(p)])
    y = np.array(list("abc"))[np.arange(n) % 3]
    return bf.MultiModalData.from_frames({"rna": x}, targets=pd.DataFrame({"label": y}, index=ids))


@pytest.mark.parametrize("head_weight, leaks", [(100.0, True), (1.0, False)])
def test_cross_fitting_removes_the_overconfidence_of_label_shaped_latents(head_weight, leaks):
    """Positive control (head weight 100, no early stopping): the encoders memorise the labels of
    pure-noise features, so the in-sample head refit is confidently wrong on new patients while
    the cross-fitted refit stays near 1/3. Negative control (head weight 1): the latents barely
    carry the labels and both refits agree."""
    tr, te = _noise_cohort(90, 200, 0), _noise_cohort(90, 200, 1)
    e = CrossFittedEnsemble(tr, K=3, heads={"label": Categorical(weight=head_weight)}, latent_dim=4, hidden=16,
                            dtype="float64", head_refit_steps=300)
    e.fit(seed=0, max_epochs=60, kl_warmup_epochs=5, validation_fraction=0, progress=False)

    def score():
        p = e.predict(te, num_samples=60, seed=0)
        pr = p.mean_probs("label").to_numpy()
        yy = encode_labels(te.targets["label"].to_numpy(), p.classes("label"))
        norm = np.mean([m.module.heads["label"].posterior_q.loc.norm().item() for m in e.members_])
        return nll(pr, yy), pr.max(1).mean(), norm

    x_nll, x_conf, x_norm = score()
    e.refit_heads(in_sample=True)
    i_nll, i_conf, i_norm = score()
    assert x_nll < np.log(3) + 0.05 and x_conf < 0.45            # cross-fitted: honest about pure noise
    if leaks:
        assert i_nll > x_nll + 0.2 and i_conf > x_conf + 0.1 and i_norm > 2 * x_norm
    else:
        assert abs(i_nll - x_nll) < 0.05 and abs(i_conf - x_conf) < 0.05 and i_norm < 2 * x_norm
