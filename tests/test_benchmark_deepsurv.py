"""Sanity controls of the DeepSurv benchmark baseline (studies/survival_deepsurv/deepsurv_reference.py; benchmark only).

With no hidden layer, no dropout and no L2 the network is a linear Cox model: its optimum must be lifelines'
CoxPHFitter(penalizer=0) and its loss lifelines' partial log-likelihood. Simulated cohort without ties, float64.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


def _bench():
    path = Path(__file__).resolve().parents[1] / "studies" / "survival_deepsurv" / "deepsurv_reference.py"
    spec = importlib.util.spec_from_file_location("bench_deepsurv_reference", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ds():
    return _bench()


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(3)
    n = 300
    X = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, 3.0]
    beta = np.array([0.8, -0.4, 0.6])
    T = rng.exponential(np.exp(-(X - X.mean(0)) @ beta))
    C = rng.exponential(2.0, n)
    t, e = np.minimum(T, C), T <= C
    assert len(np.unique(t)) == n and 0.3 < e.mean() < 0.9        # no ties, events and censoring
    return X, t, e


def _lifelines(Z, t, e, penalizer=0.0):
    from lifelines import CoxPHFitter

    df = pd.DataFrame(Z, columns=[f"x{i}" for i in range(Z.shape[1])])
    df["T"], df["E"] = t, e.astype(int)
    return CoxPHFitter(penalizer=penalizer).fit(df, "T", "E")


def _loss_at(ds, fit, X, t, e, l2=0.0):
    order = np.argsort(t)[::-1]
    x = torch.as_tensor(((X - fit.mean_) / fit.std_)[order], dtype=torch.float64)
    with torch.no_grad():
        return float(ds.deepsurv_loss(fit.net, x, torch.as_tensor(e[order], dtype=torch.float64), l2))


def test_linear_deepsurv_is_lifelines_cox(ds, cohort):
    X, t, e = cohort
    fit = ds.fit_deepsurv(X, t, e, hidden=(), learning_rate=0.05, n_epochs=800, dtype=torch.float64, seed=0)
    Z = (X - fit.mean_) / fit.std_
    cph = _lifelines(Z, t, e)
    w = fit.net.weights()[0].detach().numpy().ravel()
    np.testing.assert_allclose(w, cph.params_.to_numpy(), atol=1e-3)
    # the loss at the fitted weights is lifelines' (negated) partial log-likelihood at its optimum
    assert _loss_at(ds, fit, X, t, e) == pytest.approx(-cph.log_likelihood_, abs=1e-5)
    # the loss AT lifelines' beta equals lifelines' value exactly (same function, not only the same optimum)
    with torch.no_grad():
        fit.net.weights()[0].copy_(torch.as_tensor(cph.params_.to_numpy()[None, :]))
        fit.net.net[-1].bias.fill_(3.7)                   # the partial likelihood ignores the intercept
    assert _loss_at(ds, fit, X, t, e) == pytest.approx(-cph.log_likelihood_, abs=1e-8)
    # negative control: the same risks in the wrong (ascending) order give a different likelihood
    r = torch.as_tensor(Z @ cph.params_.to_numpy())
    asc = np.argsort(t)
    wrong = float(ds.neg_partial_loglik(r[asc], torch.as_tensor(e[asc], dtype=torch.float64)))
    assert abs(wrong + cph.log_likelihood_) > 10.0


def test_l2_penalises_weights_not_biases(ds, cohort):
    X, t, e = cohort
    fit = ds.fit_deepsurv(X, t, e, hidden=(4,), n_epochs=3, dtype=torch.float64, seed=1)
    base = _loss_at(ds, fit, X, t, e, l2=2.0)
    w2 = sum(float((w.detach() ** 2).sum()) for w in fit.net.weights())
    assert base - _loss_at(ds, fit, X, t, e, l2=0.0) == pytest.approx(2.0 * w2, rel=1e-12)
    with torch.no_grad():
        fit.net.net[-1].bias.add_(5.0)                     # a bias: shifts every risk, no penalty
    assert _loss_at(ds, fit, X, t, e, l2=2.0) == pytest.approx(base, abs=1e-9)
    # positive control of the penalty: shrinks the linear fit towards 0 (ridge-like)
    pen = ds.fit_deepsurv(X, t, e, hidden=(), learning_rate=0.05, L2_reg=20.0, n_epochs=800,
                          dtype=torch.float64, seed=0)
    free = ds.fit_deepsurv(X, t, e, hidden=(), learning_rate=0.05, n_epochs=800, dtype=torch.float64, seed=0)
    assert np.linalg.norm(pen.net.weights()[0].detach()) < 0.9 * np.linalg.norm(free.net.weights()[0].detach())


def test_optimizer_variants(ds, cohort):
    """as_run ignores lr_decay and momentum (the DeepSurv code as executed); as_intended uses both."""
    X, t, e = cohort
    kw = dict(hidden=(5, 5), dropout=0.1, learning_rate=0.01, L2_reg=1.0, n_epochs=30, dtype=torch.float64, seed=2)
    plain = ds.fit_deepsurv(X, t, e, optimizer="as_run", **kw)
    run = ds.fit_deepsurv(X, t, e, optimizer="as_run", lr_decay=0.5, momentum=0.9, **kw)
    assert run.losses_ == plain.losses_
    intended = ds.fit_deepsurv(X, t, e, optimizer="as_intended", lr_decay=0.0, momentum=0.9, **kw)
    # identical for the 10 momentum-free epochs, different once momentum starts
    assert intended.losses_[:11] == plain.losses_[:11] and intended.losses_[-1] != plain.losses_[-1]
    with pytest.raises(ValueError, match="optimizer"):
        ds.fit_deepsurv(X, t, e, optimizer="sgd", **kw)


def test_architecture_and_c_index(ds, cohort):
    from lifelines.utils import concordance_index

    from bayesfuse.metrics import concordance_harrell

    net = ds.DeepSurvNet(9, (42, 42, 42), 0.03)
    assert sum(p.numel() for p in net.parameters()) == 9 * 42 + 42 + 2 * (42 * 42 + 42) + 42 + 1
    assert sum(isinstance(m, torch.nn.SELU) for m in net.net) == 3
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.net) == 3
    bound = np.sqrt(6 / (9 + 42))
    w0 = net.net[0].weight.detach().numpy()
    assert np.abs(w0).max() <= bound and np.abs(w0).max() > 0.8 * bound
    X, t, e = cohort
    risk = X @ np.array([0.8, -0.4, 0.6])
    assert ds.harrell(t, e, risk) == concordance_index(t, -risk, e) == concordance_harrell(t, e, risk)
    assert ds.harrell(t, e, risk) > 0.6 and ds.harrell(t, e, -risk) < 0.4
