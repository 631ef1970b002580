"""bayesfuse.sklearn: scikit-learn estimator checks, clone / pickle / Pipeline / GridSearchCV, survival scoring."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from bayesfuse.sklearn import FusionClassifier, FusionSurvival

# Tiny fits: a few epochs of a 2-d latent model (blobs in check_classifiers_train reach > 0.9 accuracy).
# short fits: 10 epochs, and encoder dropout 0.1 (the default 0.3 for models with heads needs more epochs to converge)
FAST = dict(max_epochs=10, hidden=16, latent_dim=2, num_samples=20, lr=3e-2, batch_size=32, kl_warmup_epochs=2,
            encoder_dropout=0.1)



class _SurvivalCheckTarget(FusionSurvival):
    """FusionSurvival for the generic estimator checks, which pass a 1-D class / regression ``y``: it is
    read as observed event times ``1 + y - min(y)`` (every event observed). Everything else (X validation,
    fit, predict, score, pickling, tags) is FusionSurvival's own."""

    @staticmethod
    def _event_time(y):
        arr = np.asarray(y)
        if arr.ndim == 1 and not arr.dtype.names:
            t = arr.astype(np.float64)
            return np.ones(len(t)), 1.0 + t - t.min()
        return FusionSurvival._event_time(y)


# Every check of check_estimator runs (none expected to fail); check_array_api_input skips itself
# unless SCIPY_ARRAY_API=1 is set.
@parametrize_with_checks([FusionClassifier(**FAST), _SurvivalCheckTarget(**FAST)])
def test_sklearn_compatible(estimator, check):
    before = repr(sorted(estimator.get_params(deep=False).items()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)   # raises on a broken convention (negative control below)
    # the constructor parameters stay what the user set, whatever the checks fitted (scikit-learn's contract;
    # e.g. fit must not write the resolved latent_dim="auto" back)
    assert repr(sorted(estimator.get_params(deep=False).items())) == before


def test_sklearn_checks_fail_on_a_broken_estimator():
    """Negative control for test_sklearn_compatible: the checks it runs raise on an estimator that breaks
    scikit-learn's conventions (here: an attribute set in ``__init__``)."""
    from sklearn.utils.estimator_checks import check_no_attributes_set_in_init

    class Broken(FusionClassifier):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.fitted_thing_ = 1

    check_no_attributes_set_in_init("FusionClassifier", FusionClassifier(**FAST))   # the real one passes
    with pytest.raises(AssertionError, match="fitted_thing_"):
        check_no_attributes_set_in_init("Broken", Broken(**FAST))


def test_shared_noise_makes_rows_independent_of_the_batch():
    """Common random numbers: a row's draws depend only on that row (subset / permutation invariance);
    negative control: the default per-patient noise does depend on the row position."""
    X, y = _blocks(n=60)
    clf = FusionClassifier(modalities=MODS, **FAST).fit(X, y)
    data = clf._data(X, None, reset=False)
    sub = data.subset(ids=list(data.sample_ids[::-3]))          # a reversed subset
    pos = [list(data.sample_ids).index(i) for i in sub.sample_ids]
    for shared, close in ((True, True), (False, False)):
        full = clf.model_.predict(data, num_samples=20, seed=1, shared_noise=shared).probs("y")
        part = clf.model_.predict(sub, num_samples=20, seed=1, shared_noise=shared).probs("y")
        assert np.allclose(full[:, pos], part, rtol=0, atol=1e-6) is close
    np.testing.assert_allclose(clf.predict_proba(X.iloc[::-3]), clf.predict_proba(X)[::-3], rtol=0, atol=1e-7)


def _blocks(n=120, seed=0):
    rs = np.random.RandomState(seed)
    y = rs.randint(0, 3, n)
    centers = rs.randn(3, 6) * 2
    X = pd.DataFrame(centers[y] + rs.randn(n, 6), columns=[f"m{j}" for j in range(3)] + [f"p{j}" for j in range(3)])
    X.iloc[: n // 4, 3:] = np.nan          # a quarter of the patients lack "protein"
    X.iloc[n // 4: n // 3, :3] = np.nan    # some lack "mrna"
    labels = np.array(["a", "b", "c"])[y]
    return X, labels


MODS = {"mrna": ["m0", "m1", "m2"], "protein": ["p0", "p1", "p2"]}


def test_dataframe_blocks_missing_modalities_and_pickle(tmp_path):
    X, y = _blocks()
    clf = FusionClassifier(modalities=MODS, **{**FAST, "max_epochs": 20}).fit(X, y)   # 10 epochs: ~0.65
    assert list(clf.classes_) == ["a", "b", "c"]
    assert clf.model_.modalities == ["mrna", "protein"]
    p = clf.predict_proba(X)
    assert p.shape == (len(X), 3) and np.allclose(p.sum(1), 1)
    assert (clf.predict(X) == y).mean() > 0.85
    # rows that all lack a modality: scored from the others (only-NaN block at predict time)
    Xm = X.copy()
    Xm[MODS["protein"]] = np.nan
    assert clf.predict_proba(Xm).shape == (len(X), 3)
    # pickling goes through JSON + safetensors: no torch object in the byte stream
    state = clf.__getstate__()
    assert set(state["model_"]) == {"format", "config", "weights"} and isinstance(state["model_"]["weights"], bytes)
    blob = pickle.dumps(clf)
    assert b"torch" not in blob
    clf2 = pickle.loads(blob)
    np.testing.assert_array_equal(clf2.predict_proba(X), p)
    # clone: unfitted, same params
    c = clone(clf)
    assert not hasattr(c, "model_") and c.get_params() == clf.get_params()


def test_pipeline_gridsearch_cross_val():
    X, y = _blocks(n=90)
    pipe = make_pipeline(FunctionTransformer(lambda d: d), FusionClassifier(modalities=MODS, **FAST))
    scores = cross_val_score(pipe, X, y, cv=3, scoring="neg_log_loss")
    assert np.isfinite(scores).all()
    gs = GridSearchCV(FusionClassifier(modalities=MODS, **FAST), {"latent_dim": [2, 3]}, cv=2).fit(X, y)
    assert gs.best_params_["latent_dim"] in (2, 3)
    assert gs.predict(X).shape == (len(X),)


def test_errors_name_the_fix():
    X, y = _blocks(n=30)
    with pytest.raises(ValueError, match="names columns"):
        FusionClassifier(modalities={"mrna": ["nope"]}, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FusionClassifier(**FAST).fit(X.fillna(0).to_numpy(), np.zeros(len(X)))


def _surv_data(n=120, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    t = rs.exponential(np.exp(-X[:, 0]))
    c = rs.exponential(2.0, n)
    y = np.zeros(n, dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = t <= c, np.minimum(t, c) + 1e-3
    return X, y


def test_survival_estimator_scores_concordance():
    X, y = _surv_data()
    est = FusionSurvival(**{**FAST, "max_epochs": 30}).fit(X, y)
    risk = est.predict(X)
    assert risk.shape == (len(X),)
    c = est.score(X, y)
    assert 0.6 < c <= 1.0   # the signal is in X[:, 0]
    s = est.predict_survival_function(X, [0.5, 1.0])
    assert s.shape == (len(X), 2) and (s[:, 0] >= s[:, 1]).all()
    # DataFrame y, clone and pickle
    ydf = pd.DataFrame({"time": y["time"], "event": y["event"].astype(int)})
    est2 = clone(est).fit(X, ydf)
    np.testing.assert_array_equal(est2.predict(X), risk)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(X), risk)
    gs = GridSearchCV(FusionSurvival(**FAST), {"latent_dim": [2, 3]}, cv=2).fit(X, y)
    assert np.isfinite(gs.best_score_)
