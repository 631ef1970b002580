"""Property tests (hypothesis) over random cohorts: modality counts, sizes, missingness patterns, label sets,
censoring and extreme feature scales. For every cohort a tiny model is fitted for a few epochs and

* class probabilities are finite and sum to 1 for every draw,
* survival curves lie in [0, 1] and are non-increasing in time,
* imputations are finite,
* every input id comes back once, in input order (predict and impute; ids shuffled on input).

Profiles: ``FAST`` examples in the default run, ``LONG`` examples behind the ``slow`` marker.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayesfuse as bf

FAST, LONG = 8, 150
COMMON = {"deadline": None, "database": None, "derandomize": True,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@st.composite
def cohorts(draw):
    n = draw(st.integers(8, 40))
    n_mod = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    ids = [f"s{draw(st.integers(0, 9))}_{i}" for i in range(n)]
    rng.shuffle(ids)
    presence = rng.random((n, n_mod)) > draw(st.sampled_from([0.0, 0.3, 0.6]))
    presence[np.arange(n), rng.integers(0, n_mod, n)] = True   # each patient keeps one modality
    frames = {}
    for m in range(n_mod):
        kind = draw(st.sampled_from(["gaussian", "bernoulli", "counts"]))
        f = draw(st.integers(1, 6))
        scale = draw(st.sampled_from([1e-4, 1.0, 1e4])) if kind == "gaussian" else 1.0
        if kind == "gaussian":
            x = rng.normal(size=(n, f)) * scale + draw(st.sampled_from([0.0, 1e3]))
        elif kind == "bernoulli":
            x = (rng.random((n, f)) > 0.5).astype(float)
        else:
            x = rng.poisson(draw(st.sampled_from([0.5, 50.0])), size=(n, f)).astype(float)
        x[rng.random((n, f)) < draw(st.sampled_from([0.0, 0.1]))] = np.nan   # NaN cells
        keep = presence[:, m]
        cols = [f"m{m}_f{j}" for j in range(f)]
        frames[f"mod{m}"] = pd.DataFrame(x[keep], index=np.asarray(ids, dtype=object)[keep], columns=cols)
    labels = draw(st.sampled_from([["A", "B"], ["x", "y", "z"], ["1", "2", "3", "4"]]))
    lab = rng.choice(labels, n).astype(object)
    lab[: len(labels)] = labels   # every class present
    lab[rng.random(n) < draw(st.sampled_from([0.0, 0.2]))] = np.nan   # unlabelled patients
    lab[: len(labels)] = labels
    censor = draw(st.sampled_from([0.0, 0.5, 0.9]))
    event = (rng.random(n) > censor).astype(int)
    event[0] = 1
    time = rng.exponential(draw(st.sampled_from([0.01, 10.0, 1e4])), n) + 1e-3
    targets = pd.DataFrame({"subtype": lab, "time": time, "event": event}, index=ids)
    return bf.MultiModalData.from_frames(frames, targets=targets)


def _check(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(data, heads={"subtype": "categorical", "survival": "survival"}, latent_dim=2,
                               hidden=4, device="cpu").fit(max_epochs=2, batch_size=16, progress=False,
                                                           kl_warmup_epochs=1)
        post = model.predict(data, num_samples=4)
        imp = model.impute(data, num_samples=3)
    assert list(post.sample_ids) == list(data.sample_ids) and list(imp.sample_ids) == list(data.sample_ids)
    p = post.probs("subtype")
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    times = np.sort(np.concatenate([[0.0], post.default_times("survival"),
                                    [10 * float(data.targets["time"].max())]]))
    s = post.survival_function("survival", times)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert (np.diff(s, axis=-1) <= 1e-7).all()
    for m, d in imp.draws.items():
        assert np.isfinite(d).all(), m
    assert list(post.mean_probs("subtype").index) == list(data.sample_ids)
    return post.n_patients


@settings(max_examples=FAST, **COMMON)
@given(cohorts())
def test_random_cohorts_fast(data):
    assert _check(data) == data.n_samples


@pytest.mark.slow
@settings(max_examples=LONG, **COMMON)
@given(cohorts())
def test_random_cohorts_long(data):
    assert _check(data) == data.n_samples
