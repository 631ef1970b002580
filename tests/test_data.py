"""MultiModalData and preprocessing: alignment, subsetting, and clear errors on bad input."""

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.data.preprocessing import ModalityTransform, detect_likelihood
from bayesfuse.exceptions import DataError


def _frames(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i}" for i in range(n)]
    a = pd.DataFrame(rng.normal(size=(n, 3)), index=ids, columns=["g1", "g2", "g3"])
    b = pd.DataFrame((rng.random((n - 2, 2)) > 0.5).astype(float), index=ids[2:], columns=["m1", "m2"])
    t = pd.DataFrame({"subtype": ["x", "y"] * (n // 2), "split": ["train"] * (n - 2) + ["test"] * 2}, index=ids)
    return a, b, t


def test_alignment_and_presence():
    a, b, t = _frames()
    d = bf.MultiModalData.from_frames({"a": a, "b": b}, targets=t)
    assert list(d.sample_ids) == list(t.index)
    assert d.presence["b"].tolist() == [False, False, True, True, True, True]
    assert d.missingness_patterns()["a + b"] == 4
    d2 = bf.MultiModalData.from_frames({"b": b, "a": a})            # no targets: first appearance order
    assert list(d2.sample_ids) == ["s2", "s3", "s4", "s5", "s0", "s1"]
    sub = d.subset(ids=["s5", "s0"])
    assert list(sub.sample_ids) == ["s5", "s0"] and list(sub.modality("b").index) == ["s5"]
    assert list(d.subset(split="test").sample_ids) == ["s4", "s5"]
    assert d.drop_modalities(["b"]).modality_names == ["a"]
    assert d.drop_features({"a": ["g2"]}).features("a") == ["g1", "g3"]
    assert "6 samples" in repr(d)


def test_sample_id_column_and_string_ids():
    a, _, t = _frames()
    a2 = a.reset_index().rename(columns={"index": "sample_id"})
    t2 = t.reset_index().rename(columns={"index": "sample_id"})
    d = bf.MultiModalData.from_frames({"a": a2}, targets=t2)
    assert list(d.sample_ids) == list(t.index)


@pytest.mark.parametrize("case, match", [
    ("misaligned", "Misaligned sample ids"),
    ("dup_ids", "duplicated sample ids"),
    ("dup_cols", "duplicated feature names"),
    ("non_numeric", "non-numeric"),
    ("all_nan", "entirely NaN"),
    ("inf", "inf values"),
])
def test_bad_input_errors(case, match):
    a, b, t = _frames()
    if case == "misaligned":
        t = t.drop(index=["s3"])
    elif case == "dup_ids":
        a = pd.concat([a, a.iloc[:1]])
    elif case == "dup_cols":
        a.columns = ["g1", "g1", "g3"]
    elif case == "non_numeric":
        a["g2"] = "high"
    elif case == "all_nan":
        a[:] = np.nan
    elif case == "inf":
        a.iloc[0, 0] = np.inf
    with pytest.raises(DataError, match=match):
        bf.MultiModalData.from_frames({"a": a, "b": b}, targets=t)


def test_subset_errors():
    a, b, t = _frames()
    d = bf.MultiModalData.from_frames({"a": a, "b": b}, targets=t)
    with pytest.raises(DataError, match="not found"):
        d.subset(split="validation")
    with pytest.raises(DataError, match="not in this data"):
        d.subset(ids=["nope"])
    with pytest.raises(ValueError, match="exactly one"):
        d.subset()
    with pytest.raises(DataError, match="no columns"):
        d.drop_features({"a": ["zzz"]})


def test_all_nan_row_means_absent():
    a, b, t = _frames()
    a.loc["s1"] = np.nan
    d = bf.MultiModalData.from_frames({"a": a, "b": b}, targets=t)
    assert not d.presence.loc["s1", "a"]


def test_likelihood_detection():
    rng = np.random.default_rng(0)
    assert detect_likelihood(rng.normal(size=(20, 5))) == "gaussian"
    assert detect_likelihood((rng.random((20, 5)) > 0.5).astype(float)) == "bernoulli"
    assert detect_likelihood(rng.poisson(30, (20, 200)).astype(float)) == "negbinom"
    # few-feature integer tables (ages, scores) stay Gaussian
    assert detect_likelihood(rng.integers(20, 90, (20, 5)).astype(float)) == "gaussian"


def test_transform_matches_columns_by_name_and_refuses_bad_columns():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(30, 4)), columns=list("abcd"))
    tf = ModalityTransform.fit("m", df)
    ref = tf.transform(df)
    shuffled = tf.transform(df[["c", "a", "d", "b"]])
    np.testing.assert_array_equal(ref.encoder_input, shuffled.encoder_input)
    np.testing.assert_allclose(ref.encoder_input.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(tf.to_original(ref.observed), df.to_numpy(), rtol=1e-10)
    with pytest.raises(DataError, match="lacks 1 feature"):
        tf.transform(df.drop(columns=["b"]))
    with pytest.raises(DataError, match="never saw"):
        tf.transform(df.assign(e=1.0))
    with pytest.raises(DataError, match="Bernoulli"):
        ModalityTransform.fit("m", df, likelihood="bernoulli")


def test_nan_cells_are_masked():
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(10, 3)), columns=list("abc"))
    df.iloc[2, 1] = np.nan
    arr = ModalityTransform.fit("m", df).transform(df)
    assert not arr.cell_mask[2, 1] and arr.cell_mask.sum() == 29
    assert arr.encoder_input[2, 1] == 0.0 and np.isfinite(arr.observed).all()


def test_count_feature_selection_and_log1p():
    rng = np.random.default_rng(3)
    counts = pd.DataFrame(rng.negative_binomial(5, 0.1, (40, 300)).astype(float),
                          columns=[f"g{i}" for i in range(300)])
    counts["g0"] = 0.0
    tf = ModalityTransform.fit("rna", counts, max_features=50)
    assert tf.likelihood == "negbinom" and tf.n_features == 50 and "g0" not in tf.features
    arr = tf.transform(counts)
    np.testing.assert_allclose(arr.library, counts[tf.features].sum(1).to_numpy())
    skewed = pd.DataFrame({"x": rng.lognormal(0, 1.5, 200), "y": rng.normal(size=200)})
    tf2 = ModalityTransform.fit("c", skewed)
    assert tf2.log1p.tolist() == [True, False]
    back = tf2.to_original(tf2.transform(skewed).observed)
    np.testing.assert_allclose(back, skewed.to_numpy(), rtol=1e-8)


def test_model_rejects_unknown_classes_and_modalities():
    a, b, t = _frames(n=20)
    d = bf.MultiModalData.from_frames({"a": a, "b": b}, targets=t)
    model = bf.FusionModel(d, heads={"subtype": "categorical"}, latent_dim=2, hidden=4)
    model.fit(max_epochs=2, progress=False)
    extra = bf.MultiModalData.from_frames({"a": a, "c": b}, targets=t)
    with pytest.raises(DataError, match="not trained on"):
        model.predict(extra)
    t2 = t.copy()
    t2.iloc[0, 0] = "zebra"
    with pytest.raises(DataError, match="unknown class"):
        from bayesfuse.model.targets import encode_targets
        encode_targets("subtype", model.heads["subtype"], t2, len(t2), strict=True)
    with pytest.raises(DataError, match="likelihoods= names unknown"):
        bf.FusionModel(d, likelihoods={"zzz": "gaussian"})


def test_read_dir_roundtrip(tmp_path):
    a, b, t = _frames()
    a.rename_axis("sample_id").to_csv(tmp_path / "expr.csv.gz")
    b.rename_axis("sample_id").to_csv(tmp_path / "mut.csv.gz")
    t.rename_axis("sample_id").to_csv(tmp_path / "targets.csv")
    d = bf.MultiModalData.read_dir(tmp_path)
    assert d.modality_names == ["expr", "mut"] and d.n_samples == 6
    np.testing.assert_allclose(d.modality("expr").to_numpy(), a.to_numpy())
    d2 = bf.MultiModalData.read_dir(tmp_path, modalities=["mut"], drop_features={"mut": ["m2"]})
    assert d2.modality_names == ["mut"] and d2.features("mut") == ["m1"]
    with pytest.raises(DataError, match="does not exist"):
        bf.MultiModalData.read_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="not found"):
        bf.MultiModalData.read_dir(tmp_path, modalities=["protein"])


def _mixed_frame(n=8, seed=3):
    # float64, int, nullable boolean and nullable int columns, a sample_id column, an all-missing row
    # (p2: the sample lacks the modality) and a NaN cell (p4)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[[2, 4]] = np.nan
    flag = pd.array([bool(v) for v in rng.random(n) > 0.5], dtype="boolean")
    flag[2] = pd.NA
    return pd.DataFrame({"sample_id": [f"p{i}" for i in range(n)], "x": x,
                         "k": np.where(np.arange(n) == 2, np.nan, rng.integers(0, 5, n)), "flag": flag,
                         "c": pd.array([1, None, None] + [3] * (n - 3), dtype="Int64")})


@pytest.mark.parametrize("copy", [True, False])
def test_multimodal_data_never_mutates_callers_frames(copy):
    a, b, t = _frames()
    mixed = _mixed_frame()
    frames = {"a": a, "b": b, "mixed": mixed}
    before = {k: v.copy(deep=True) for k, v in frames.items()}
    t_before = t.copy(deep=True)
    d = bf.MultiModalData.from_frames(frames, copy=copy)
    # the cohort is usable and every derived object is built (these must not write into the inputs either)
    bf.FusionModel(d.select_modalities(["a", "b"]), latent_dim=2)
    returned = d.subset(ids=["s1", "s3"]).modality("a")
    returned.iloc[:, 0] = 99.0  # modifying a returned table
    d.with_modality("a2", a)
    d2 = bf.MultiModalData.from_frames({"a": a}, targets=t, copy=copy)
    returned = d2.modality("a")
    returned.loc[:, "g1"] = -1.0
    for k, v in frames.items():
        pd.testing.assert_frame_equal(v, before[k])  # values, dtypes, index, columns unchanged
        assert list(v.columns) == list(before[k].columns) and v.index.name == before[k].index.name
    pd.testing.assert_frame_equal(t, t_before)
    # the cleaned table: string ids, float64, the all-NaN row dropped, NaN cell kept, pd.NA -> NaN
    m = d.modality("mixed")
    assert m.dtypes.eq(np.float64).all() and "p2" not in m.index and len(m) == 7
    assert np.isnan(m.loc["p4", "x"]) and np.isnan(m.loc["p1", "c"]) and m.loc["p3", "c"] == 3.0
    assert np.array_equal(m["flag"].to_numpy(), mixed["flag"].drop(index=2).astype(float).to_numpy())


def test_copy_flag_controls_memory_sharing():
    a, _, _ = _frames()
    shared = bf.MultiModalData.from_frames({"a": a}, copy=False)
    owned = bf.MultiModalData.from_frames({"a": a})
    assert np.shares_memory(shared._modalities["a"].to_numpy(), a.to_numpy())  # no copy of float64 values
    assert not np.shares_memory(owned._modalities["a"].to_numpy(), a.to_numpy())  # default: one copy
    pd.testing.assert_frame_equal(shared.modality("a"), owned.modality("a"))
    # subset keeping every row of a modality shares the table instead of copying it
    assert shared.subset(ids=list(a.index))._modalities["a"] is shared._modalities["a"]
