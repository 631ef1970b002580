"""Tests of the latent Mahalanobis OOD score (bayesfuse.posterior.LatentMahalanobis) as an Abstainer gate,
and of select_head_weight (head-weight choice on training patients only)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from bayesfuse.calibration import Abstainer, CalibrationWarning
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Categorical
from bayesfuse.posterior import LatentMahalanobis, Posterior

CLASSES = ["A", "B", "C"]
D = 6


def clusters(n, seed, centres, cov_scale=1.0):
    """Gaussian clusters with a shared non-diagonal covariance, labels = cluster index."""
    rng = np.random.default_rng(seed)
    a = np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)
    chol = np.linalg.cholesky(a @ a.T + 0.5 * np.eye(D)) * cov_scale
    y = rng.integers(0, len(centres), n)
    z = np.asarray(centres, float)[y] + rng.normal(size=(n, D)) @ chol.T
    return z, y


CENTRES = [np.r_[4.0, np.zeros(D - 1)], np.r_[0.0, 4.0, np.zeros(D - 2)], np.r_[-4.0, np.zeros(D - 1)]]
UNSEEN = [np.r_[0.0, -4.0, 4.0, np.zeros(D - 3)]]  # a fourth cluster, as far from the others as they are apart


def make_post(z, ids, seed=0):
    """Posterior whose head is a softmax of the latent against the known class centres (overconfident far away)."""
    rng = np.random.default_rng(seed)
    n = len(z)
    logits = -0.5 * ((z[:, None, :] - np.asarray(CENTRES)[None]) ** 2).sum(-1)
    probs = softmax(logits[None] + 0.1 * rng.normal(size=(4, n, len(CLASSES))), axis=-1)
    return Posterior(sample_ids=ids, heads={"origin": Categorical(column="origin", classes=CLASSES)},
                     draws={"origin": {"probs": probs}}, latent=np.broadcast_to(z, (4, n, D)).copy(),
                     latent_loc=z, latent_scale=np.ones((n, D)),
                     presence=pd.DataFrame({"mrna": np.ones(n, bool)}, index=ids),
                     modality_precision=np.ones((n, 1, D)))


def test_score_equals_scipy_mahalanobis_float64():
    z, y = clusters(400, seed=0, centres=CENTRES)
    m = LatentMahalanobis.fit(z, np.asarray(CLASSES, dtype=object)[y], shrinkage=0.0)
    means = np.stack([z[y == j].mean(0) for j in range(3)])
    resid = z - means[y]
    cov = resid.T @ resid / (len(z) - 3)
    vi = np.linalg.inv(cov)
    new, _ = clusters(50, seed=1, centres=CENTRES + UNSEEN)
    expect = np.array([min(mahalanobis(x, mu, vi) ** 2 for mu in means) for x in new])
    np.testing.assert_allclose(m.score(new), expect, rtol=1e-10, atol=1e-10)
    assert m.score(new).dtype == np.float64
    # shrinkage changes the score (the ridge is applied), and scores stay >= 0
    m2 = LatentMahalanobis.fit(z, np.asarray(CLASSES, dtype=object)[y], shrinkage=0.5)
    assert not np.allclose(m2.score(new), expect) and (m2.score(new) >= 0).all()


def test_unseen_cluster_separated_and_exchangeable_not():
    z, y = clusters(600, seed=0, centres=CENTRES)
    m = LatentMahalanobis.fit(z, np.asarray(CLASSES, dtype=object)[y])
    known, _ = clusters(300, seed=1, centres=CENTRES)
    unseen, _ = clusters(300, seed=2, centres=UNSEEN)
    more_known, _ = clusters(300, seed=3, centres=CENTRES)
    lab = np.r_[np.zeros(300), np.ones(300)]
    # positive control: an unseen cluster scores higher
    assert roc_auc_score(lab, np.r_[m.score(known), m.score(unseen)]) > 0.97
    # negative control: new patients from the known clusters are indistinguishable from known ones
    assert 0.42 < roc_auc_score(lab, np.r_[m.score(known), m.score(more_known)]) < 0.58


def test_from_posterior_aligns_by_id_and_validates():
    z, y = clusters(200, seed=0, centres=CENTRES)
    ids = np.array([f"p{i}" for i in range(200)], dtype=object)
    post = make_post(z, ids)
    labels = pd.Series(np.asarray(CLASSES, dtype=object)[y], index=ids)
    a = LatentMahalanobis.from_posterior(post, labels.iloc[::-1])  # order must not matter
    b = LatentMahalanobis.fit(z, labels.to_numpy())
    np.testing.assert_allclose(a.means_, b.means_)
    np.testing.assert_allclose(a(post, "origin"), b.score(z))
    with pytest.raises(DataError, match="latent_dim|expected"):
        a.score(np.zeros((3, D + 1)))
    with pytest.raises(DataError, match="one label per row"):
        LatentMahalanobis.fit(z, labels.to_numpy()[:10])
    with pytest.raises(DataError, match="Series"):
        LatentMahalanobis.from_posterior(post, labels.to_numpy())


def test_abstainer_gate_refuses_unseen_and_keeps_known_quantile():
    """Gate at calibration quantile q: >= q of exchangeable patients pass; the unseen cluster is refused."""
    z_tr, y_tr = clusters(600, seed=0, centres=CENTRES)
    maha = LatentMahalanobis.fit(z_tr, np.asarray(CLASSES, dtype=object)[y_tr])
    z_cal, y_cal = clusters(800, seed=1, centres=CENTRES)
    z_te, y_te = clusters(4000, seed=2, centres=CENTRES)
    z_un, _ = clusters(500, seed=3, centres=UNSEEN)
    ids = lambda p, n: np.array([f"{p}{i}" for i in range(n)], dtype=object)  # noqa: E731
    cal, te, un = make_post(z_cal, ids("c", 800)), make_post(z_te, ids("t", 4000)), make_post(z_un, ids("u", 500))
    lab_cal = pd.Series(np.asarray(CLASSES, dtype=object)[y_cal], index=cal.sample_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        plain = Abstainer(0.05, 0.1).fit(cal, lab_cal, head="origin")
        gated = Abstainer(0.05, 0.1, ood_score=maha, ood_quantile=0.9).fit(cal, lab_cal, head="origin")
    assert "Mahalanobis" in gated.guarantee_ and "90%" in gated.guarantee_
    d_un, d_te = gated.predict(un), gated.predict(te)
    # negative control: without the gate the model confidently accepts most unseen patients
    assert plain.predict(un)["accepted"].mean() > 0.5
    # positive control: the gate refuses them
    assert (~d_un["accepted"]).mean() > 0.95
    assert (d_un["reason"] == "out of distribution").mean() > 0.95
    # exchangeable patients pass the gate at about the calibrated rate (>= 0.9 in expectation)
    passed = (d_te["ood"] <= gated.ood_threshold_).mean()
    assert 0.87 < passed < 0.95
    # the threshold is the conformal quantile of calibration scores (label-free)
    s = np.sort(maha(cal))
    assert gated.ood_threshold_ == s[int(np.ceil(801 * 0.9)) - 1]


def test_patient_scores_gate_aligns_by_id():
    from bayesfuse.posterior import PatientScores

    z, y = clusters(300, seed=0, centres=CENTRES)
    ids = np.array([f"p{i}" for i in range(300)], dtype=object)
    post = make_post(z, ids)
    vals = pd.Series(np.arange(300.0), index=ids)[::-1]  # reversed order: must be aligned by id
    gate = PatientScores(vals, name="my score")
    np.testing.assert_array_equal(gate(post), np.arange(300.0))
    lab = pd.Series(np.asarray(CLASSES, dtype=object)[y], index=ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        ab = Abstainer(0.1, 0.1, ood_score=gate, ood_quantile=0.8).fit(post, lab, head="origin")
    assert "my score" in ab.guarantee_ and ab.ood_threshold_ == np.sort(np.arange(300.0))[int(np.ceil(301 * 0.8)) - 1]
    with pytest.raises(DataError, match="no precomputed score"):
        PatientScores(vals.iloc[:10])(post)
    with pytest.raises(DataError, match="NaN"):
        PatientScores(pd.Series([np.nan], index=["a"]))


def test_joint_score_catches_what_either_component_misses():
    """Two OOD kinds: far in latent space (Mahalanobis sees it) and with a large input-space score that
    the latent cannot see. The joint gate refuses both; each single score misses one kind (negative control)."""
    from bayesfuse.posterior import JointScore, PatientScores

    rng = np.random.default_rng(0)
    z_tr, y_tr = clusters(600, seed=0, centres=CENTRES)
    maha = LatentMahalanobis.fit(z_tr, np.asarray(CLASSES, dtype=object)[y_tr])
    n_cal, n_a, n_b = 1000, 300, 300
    z_cal, y_cal = clusters(n_cal, seed=1, centres=CENTRES)
    z_a, _ = clusters(n_a, seed=2, centres=UNSEEN)          # kind A: unusual latent, ordinary input score
    z_b, _ = clusters(n_b, seed=3, centres=CENTRES)          # kind B: ordinary latent, unusual input score
    z_all = np.r_[z_tr, z_cal, z_a, z_b]
    ids = np.array([f"p{i}" for i in range(len(z_all))], dtype=object)
    recon = np.r_[rng.normal(0, 1, 600 + n_cal + n_a), rng.normal(6, 1, n_b)]
    other = PatientScores(pd.Series(recon, index=ids), name="input score")
    post = make_post(z_all, ids)
    sl = {"tr": slice(0, 600), "cal": slice(600, 600 + n_cal), "a": slice(600 + n_cal, 600 + n_cal + n_a),
          "b": slice(600 + n_cal + n_a, None)}
    from bayesfuse.calibration import subset_posterior

    part = {k: subset_posterior(post, ids[v]) for k, v in sl.items()}
    joint = JointScore([maha, other], [maha(part["tr"]), other(part["tr"])])
    assert "Mahalanobis" in joint.name and "input score" in joint.name
    lab = pd.Series(np.asarray(CLASSES, dtype=object)[y_cal], index=ids[sl["cal"]])
    refused = {}
    for name, gate in (("maha", maha), ("other", other), ("joint", joint)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ab = Abstainer(0.05, 0.1, ood_score=gate, ood_quantile=0.95).fit(part["cal"], lab, head="origin")
        refused[name] = {k: float((ab.predict(part[k])["reason"] == "out of distribution").mean()) for k in "ab"}
    assert refused["joint"]["a"] > 0.95 and refused["joint"]["b"] > 0.95
    assert refused["maha"]["b"] < 0.2 and refused["other"]["a"] < 0.2  # each single score misses one kind
    with pytest.raises(ValueError, match="one reference"):
        JointScore([maha, other], [maha(part["tr"])])


# --------------------------------------------------------------------- select_head_weight
def test_select_head_weight_uses_training_only_and_picks_minimum():
    import bayesfuse as bf
    from bayesfuse.evaluation.tuning import select_head_weight

    data, _ = bf.datasets.simulate(n_patients=240, missing_rate=0.1, class_separation=4.0, seed=3)
    sel = select_head_weight(data, "subtype", weights=(1.0, "auto"), criterion="aurc", folds=2,
                             model_kwargs=dict(latent_dim=4, hidden=32), fit_kwargs=dict(max_epochs=40),
                             num_samples=10)
    t = sel.table
    assert list(t["weight"]) == ["1.0", "auto"]
    assert t["resolved_weight"].iloc[1] == pytest.approx(39.0)  # 390 features / 10
    assert sel.best_weight == sel.weights[int(np.argmin(sel.validation_aurc))]
    assert sel.n_validation == data.targets["subtype"].notna().sum()  # 2 folds: every patient scored once
    assert np.isfinite(sel.validation_nll).all() and (sel.validation_nll > 0).all()
    with pytest.raises(ValueError, match="criterion"):
        select_head_weight(data, "subtype", criterion="accuracy")
    with pytest.raises(ValueError, match="Candidate weight"):
        select_head_weight(data, "subtype", weights=(0.0,))
    with pytest.raises(DataError, match="target column"):
        select_head_weight(data, "nope")
    model = sel.refit(max_epochs=3)
    best = sel.resolved_weights[sel.weights.index(sel.best_weight)]
    assert model.heads["subtype"].weight == pytest.approx(best) and len(model.history_) <= 3


def test_latent_mahalanobis_from_fitted_model_wiring_and_negative_control():
    """Model layer: latent_mahalanobis == LatentMahalanobis on the training posterior means; label-free and
    draw-independent; two halves of fresh in-distribution patients are not separated (negative control).

    (Positive controls: the synthetic-cluster tests above and the rare6 held-out types in the benchmark. On the
    simulator an unseen class is not out of distribution in latent space, since z ~ N(0, I) for every class.)
    """
    import bayesfuse as bf
    from bayesfuse.model.ood_scores import latent_mahalanobis

    data, _ = bf.datasets.simulate(n_patients=500, missing_rate=0.0, class_separation=4.0, seed=5)
    ids = data.sample_ids
    train, fresh = data.subset(ids=ids[:300]), data.subset(ids=ids[300:])
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    model.fit(max_epochs=40, seed=0, progress=False)
    maha = latent_mahalanobis(model, train, "subtype")
    assert maha.means_.shape == (3, 4) and maha.n_train_ == 300
    ref = LatentMahalanobis.from_posterior(model.predict(train, num_samples=3, seed=9), train.targets["subtype"])
    np.testing.assert_allclose(maha.means_, ref.means_, rtol=1e-6)
    np.testing.assert_allclose(maha.precision_, ref.precision_, rtol=1e-5)
    s_fresh = maha(model.predict(fresh, num_samples=5))
    np.testing.assert_allclose(s_fresh, maha(model.predict(fresh, num_samples=5, seed=3)))  # posterior mean only
    half = len(s_fresh) // 2
    assert 0.35 < roc_auc_score(np.r_[np.zeros(half), np.ones(len(s_fresh) - half)], s_fresh) < 0.65
    with pytest.raises(DataError, match="target column"):
        latent_mahalanobis(model, train, "nope")


def test_reconstruction_elbo_equals_fused_elbo_and_flags_shifted_patients():
    """-ELBO per patient (no head terms) equals the package's fused ELBO on the same draws (float64), and
    separates shifted patients (positive control) but not two halves of fresh ones (negative control)."""
    import torch

    import bayesfuse as bf
    from bayesfuse.model.ood_scores import reconstruction_elbo
    from bayesfuse.module.fused_elbo import fused_elbo_loss

    data, _ = bf.datasets.simulate(n_patients=400, missing_rate=0.3, class_separation=4.0, seed=6)
    ids = data.sample_ids
    train, fresh = data.subset(ids=ids[:250]), data.subset(ids=ids[250:])
    model = bf.FusionModel(train, latent_dim=4, hidden=32, dtype="float64")  # no head: ELBO of modalities only
    model.fit(max_epochs=30, seed=0, progress=False)
    raw = reconstruction_elbo(model, fresh, num_samples=1, seed=7, per_feature=False)
    assert raw.shape == (fresh.n_samples,) and raw.dtype == np.float64
    store = model._store(fresh, strict_targets=False)
    batch = store.batch(torch.arange(store.n))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(7)
        eps = torch.randn((1, store.n, 4), dtype=torch.float64)
        ref = fused_elbo_loss(model.module, batch, n_total=store.n, eps=eps[0]).item()
    assert raw.sum() == pytest.approx(ref, rel=1e-10)
    per = reconstruction_elbo(model, fresh, num_samples=32, seed=0)
    frames = {m: fresh.modality(m) for m in fresh.modality_names}
    rng = np.random.default_rng(0)
    shift = {m: (f + rng.normal(0, 3.0, size=f.shape[1]) if m != "mutation" else 1 - f) for m, f in frames.items()}
    shifted = bf.MultiModalData.from_frames(shift, targets=fresh.targets)
    per_shift = reconstruction_elbo(model, shifted, num_samples=32, seed=0)
    lab = np.r_[np.zeros(len(per)), np.ones(len(per_shift))]
    assert roc_auc_score(lab, np.r_[per, per_shift]) > 0.95
    half = len(per) // 2
    assert 0.35 < roc_auc_score(np.r_[np.zeros(half), np.ones(len(per) - half)], per) < 0.65
