"""Memory-lean data preparation gives the same numbers as the straightforward computation.

The simulator builds Gaussian/Bernoulli modalities in row blocks, ``ModalityTransform.fit``
computes its statistics over blocks of columns, ``FusionModel._store`` transforms rows in
chunks and can take a subset of ids without copying the tables: each is checked against
the unblocked / copying computation (float64).
"""

import importlib

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
import bayesfuse.data.preprocessing as pp

sim = importlib.import_module("bayesfuse.datasets.simulate")  # the package exports the function


def test_simulated_gaussian_equals_one_shot_formula():
    # n above the simulator's row block so that several blocks of noise are drawn
    n, d, f, noise, seed = sim._ROWS + 808, 3, 5, 0.7, 4
    data, truth = bf.datasets.simulate(n_patients=n, latent_dim=d, modalities={"g": ("gaussian", f)},
                                       noise_scale=noise, seed=seed)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    rng.random(n)  # presence draw of the one modality
    w = rng.standard_normal((d, f)) / np.sqrt(d)
    b = rng.normal(0, 1, f)
    expected = z @ w + b + noise * rng.standard_normal((n, f))
    assert np.array_equal(truth.z, z)
    assert np.array_equal(truth.extra["x"]["g"], expected)  # bit-identical
    assert np.array_equal(data.modality("g").to_numpy(), expected)
    # negative control: a different noise scale gives different values
    assert not np.allclose(truth.extra["x"]["g"], z @ w + b + 0.5 * noise * rng.standard_normal((n, f)))


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(300, 40))
    g[:, :6] = np.exp(1.5 * rng.normal(size=(300, 6)))  # skewed, non-negative -> log1p
    g[rng.random(g.shape) < 0.05] = np.nan
    c = rng.poisson(rng.gamma(0.5, 30, size=(120, 400))).astype(float)
    c[:, :5] = 0
    c[rng.random(c.shape) < 0.01] = np.nan
    b = (rng.random((200, 30)) < 0.3).astype(float)
    return {"g": (g, None), "g_sel": (g, 10), "counts": (c, 150), "bern": (b, None)}


@pytest.mark.parametrize("name", ["g", "g_sel", "counts", "bern"])
def test_transform_statistics_do_not_depend_on_blocks(monkeypatch, name):
    values, max_features = _frames()[name]
    df = pd.DataFrame(values, columns=[f"c{i}" for i in range(values.shape[1])])
    monkeypatch.setattr(pp, "_BLOCK_CELLS", 1 << 30)  # one block: the whole table
    whole = pp.ModalityTransform.fit(name, df, max_features=max_features)
    monkeypatch.setattr(pp, "_BLOCK_CELLS", 1)  # one column per block
    blocked = pp.ModalityTransform.fit(name, df, max_features=max_features)
    assert blocked.likelihood == whole.likelihood and blocked.features == whole.features
    np.testing.assert_allclose(blocked.center, whole.center, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocked.scale, whole.scale, rtol=1e-12, atol=1e-12)
    assert np.array_equal(blocked.log1p, whole.log1p) and blocked.library_median == whole.library_median
    if name == "g":  # the statistics are the plain per-column ones (positive control of the rule)
        assert whole.log1p[:6].all() and not whole.log1p[6:].any()
        enc = values.copy()
        enc[:, :6] = np.log1p(enc[:, :6])
        np.testing.assert_allclose(whole.center, np.nanmean(enc, axis=0), rtol=1e-12)
        np.testing.assert_allclose(whole.scale, np.nanstd(enc, axis=0), rtol=1e-12)
    if name == "counts":
        assert whole.n_features == 150 and whole.likelihood == "negbinom"


def _assert_stores_equal(a, b):
    for field in ("encoder_input", "observed", "cell_mask", "library"):
        da, db = getattr(a, field), getattr(b, field)
        assert da.keys() == db.keys()
        for k in da:
            assert torch.equal(da[k], db[k]), (field, k)
    assert torch.equal(a.presence, b.presence)
    for h in a.targets:
        for k in a.targets[h]:
            assert torch.equal(a.targets[h][k], b.targets[h][k])


def _model():
    data, _ = bf.datasets.simulate(n_patients=150, modalities={"expr": ("gaussian", 12), "mut": ("bernoulli", 7)},
                                   missing_rate=0.3, seed=2)
    expr = data.modality("expr").copy()
    expr.iloc[::7, 3] = np.nan  # missing cells
    data = data.with_modality("expr", expr)
    return data, bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, dtype="float64")


def test_store_does_not_depend_on_chunking():
    data, model = _model()
    ref = model._store(data, strict_targets=True)
    model._STORE_CHUNK_CELLS = 13  # one row per chunk
    _assert_stores_equal(model._store(data, strict_targets=True), ref)
    assert not bool(ref.cell_mask["expr"].all()) and float(ref.presence.mean()) < 1.0  # the cases are exercised


def test_store_of_ids_equals_store_of_subset():
    data, model = _model()
    ids = data.sample_ids[::-3][:40]  # reordered subset, some patients lack a modality
    _assert_stores_equal(model._store(data, strict_targets=True, ids=ids),
                         model._store(data.subset(ids=ids), strict_targets=True))
    # negative control: another subset of the same size differs
    other = model._store(data.subset(ids=data.sample_ids[:40]), strict_targets=True)
    assert not torch.equal(other.encoder_input["expr"], model._store(data, True, ids=ids).encoder_input["expr"])


@pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning")   # gc walk touches it
def test_fit_frees_the_training_store_before_calibration(monkeypatch):
    """Post-fit class calibration builds stores of its own; the training tensors must be released first,
    or they add to the peak memory of a large (backed) cohort (benchmarks/backed_scale.py)."""
    import gc

    from bayesfuse.module.batch import TensorStore

    data, _ = bf.datasets.simulate(n_patients=80, seed=0)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=8, device="cpu")
    alive = []
    calibrate = bf.FusionModel.calibrate

    def spy(self, *args, **kwargs):
        gc.collect()
        alive.extend(o.n for o in gc.get_objects() if isinstance(o, TensorStore))
        return calibrate(self, *args, **kwargs)

    monkeypatch.setattr(bf.FusionModel, "calibrate", spy)
    model.fit(max_epochs=2, progress=False, validation_fraction=0.25)
    assert model.class_calibration_   # calibration ran
    assert alive == []                # and no training / validation store was alive when it started
