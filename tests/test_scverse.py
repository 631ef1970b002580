"""scverse doors: AnnData / MuData in (in memory and backed), MuData / AnnData / tidy frames out, CLI .h5mu."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
from bayesfuse.data.preprocessing import ModalityTransform
from bayesfuse.data.source import BackedModality

ad = pytest.importorskip("anndata")
md = pytest.importorskip("mudata")

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning:mudata.*"),
              pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")]   # unsorted MultiIndex

FIT = dict(max_epochs=4, seed=0, progress=False)
MODEL = dict(latent_dim=3, hidden=16, device="cpu")


def _adata(df: pd.DataFrame, obs: pd.DataFrame | None = None):
    return ad.AnnData(df.to_numpy(), obs=pd.DataFrame(index=df.index) if obs is None else obs.loc[df.index],
                      var=pd.DataFrame(index=df.columns))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """One unpaired cohort (20% of modalities missing) as a CSV folder, frames, AnnData dict and .h5mu file."""
    data, _ = bf.datasets.simulate(n_patients=120, missing_rate=0.2, seed=3)
    mods = {m: data.modality(m) for m in sorted(data.modality_names)}   # read_dir sorts the files
    mdata = md.MuData({m: _adata(df) for m, df in mods.items()})
    targets = data.targets.loc[list(mdata.obs_names)]                  # one sample order for every door
    for c in targets.columns:
        mdata.obs[c] = targets[c].to_numpy()
    root = tmp_path_factory.mktemp("cohort")
    folder = root / "csv"
    folder.mkdir()
    for m, df in mods.items():
        df.to_csv(folder / f"{m}.csv.gz")
    targets.to_csv(folder / "targets.csv")
    h5mu = root / "cohort.h5mu"
    mdata.write(h5mu)
    csv = bf.MultiModalData.read_dir(folder)
    frames = {m: csv.modality(m) for m in csv.modality_names}   # the values as the CSV reader parsed them
    return {"folder": folder, "h5mu": h5mu, "csv": csv, "frames": frames, "targets": csv.targets}


def _fit_predict(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"}, **MODEL).fit(**FIT)
        post = model.predict(data.subset(split="test"), num_samples=5, seed=1)
    return model, post


def test_four_doors_bit_identical(cohort):
    frames, targets = cohort["frames"], cohort["targets"]
    sources = {
        "csv": cohort["csv"],
        "frames": bf.MultiModalData.from_frames(frames, targets=targets),
        "anndata": bf.MultiModalData.from_anndata({m: _adata(df) for m, df in frames.items()}, obs=targets),
        "mudata": bf.MultiModalData.from_mudata(md.read_h5mu(cohort["h5mu"]), targets=list(targets.columns)),
    }
    ref_model, ref_post = _fit_predict(sources["csv"])
    ref_state = ref_model.module.state_dict()
    for name, data in sources.items():
        assert list(data.sample_ids) == list(sources["csv"].sample_ids), name
        assert data.modality_names == sources["csv"].modality_names, name
        model, post = _fit_predict(data)
        state = model.module.state_dict()
        assert all(torch.equal(state[k], ref_state[k]) for k in ref_state), name
        np.testing.assert_array_equal(post.probs("subtype"), ref_post.probs("subtype"), err_msg=name)
        np.testing.assert_array_equal(post.latent_loc, ref_post.latent_loc, err_msg=name)


def test_unpaired_mudata_per_modality_targets_trains():
    rs = np.random.RandomState(0)
    ids = [f"p{i}" for i in range(60)]
    rna = pd.DataFrame(rs.randn(45, 8), index=ids[:45], columns=[f"g{j}" for j in range(8)])
    prot = pd.DataFrame(rs.randn(40, 5), index=ids[20:], columns=[f"q{j}" for j in range(5)])
    lab = pd.Series(np.where(rs.rand(60) < 0.5, "A", "B"), index=ids)
    a_rna = _adata(rna)
    a_rna.obs["subtype"] = lab.loc[rna.index].to_numpy()
    a_prot = _adata(prot)
    a_prot.obs["subtype"] = lab.loc[prot.index].to_numpy()
    mdata = md.MuData({"rna": a_rna, "protein": a_prot})
    data = bf.MultiModalData.from_mudata(mdata, targets=["subtype"])
    assert data.n_samples == 60
    pres = data.presence
    assert pres["rna"].sum() == 45 and pres["protein"].sum() == 40 and (pres.sum(axis=1) == 1).sum() == 35
    assert data.targets["subtype"].loc[ids].tolist() == lab.tolist()   # combined over modalities
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(data, heads={"subtype": "categorical"}, **MODEL).fit(**FIT)
    post = model.predict(data, num_samples=4)
    assert post.probs("subtype").shape == (4, 60, 2)


def test_layer_sparse_and_obs_errors(tmp_path):
    import scipy.sparse as sp

    rs = np.random.RandomState(1)
    counts = rs.poisson(3.0, (20, 6)).astype(float)
    a = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(index=[f"s{i}" for i in range(20)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(6)]))
    a.layers["log"] = np.log1p(counts)
    data = bf.MultiModalData.from_anndata({"rna": a})
    np.testing.assert_array_equal(data.modality("rna").to_numpy(), counts)
    data = bf.MultiModalData.from_anndata({"rna": a}, layer="log")
    np.testing.assert_array_equal(data.modality("rna").to_numpy(), np.log1p(counts))
    a.write_h5ad(tmp_path / "sparse.h5ad")   # backed CSR: read in row chunks, implicit entries = 0
    backed = bf.MultiModalData.from_anndata({"rna": ad.read_h5ad(tmp_path / "sparse.h5ad", backed="r")})
    assert backed.backed == {"rna": True}
    np.testing.assert_array_equal(backed.modality("rna").to_numpy(), counts)
    with pytest.raises(bf.exceptions.DataError, match="no layer 'nope'"):
        bf.MultiModalData.from_anndata({"rna": a}, layer="nope")
    with pytest.raises(bf.exceptions.DataError, match="neither an obs column"):
        bf.MultiModalData.from_mudata(md.MuData({"rna": a}), targets=["subtype"])


def _write_backed(tmp_path, frames):
    out = {}
    for m, df in frames.items():
        _adata(df).write_h5ad(tmp_path / f"{m}.h5ad")
        out[m] = ad.read_h5ad(tmp_path / f"{m}.h5ad", backed="r")
    return out


def test_backed_anndata_matches_in_memory(cohort, tmp_path, monkeypatch):
    import bayesfuse.data.source as source

    monkeypatch.setattr(source, "CHUNK_CELLS", 2000)   # many small row chunks
    frames, targets = cohort["frames"], cohort["targets"]
    backed = bf.MultiModalData.from_anndata(_write_backed(tmp_path, frames), obs=targets)
    assert all(backed.backed.values())
    assert isinstance(backed._modality_frame("expression"), BackedModality)
    mem_model, mem_post = _fit_predict(cohort["csv"])
    bk_model, bk_post = _fit_predict(backed)
    for m, tf in mem_model.transforms.items():   # streamed statistics = in-memory ones up to summation order
        tb = bk_model.transforms[m]
        assert tb.likelihood == tf.likelihood and tb.features == tf.features
        np.testing.assert_allclose(tb.center, tf.center, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(tb.scale, tf.scale, rtol=1e-10)
    np.testing.assert_allclose(bk_post.probs("subtype"), mem_post.probs("subtype"), atol=1e-5)
    # subsets and feature drops stay lazy views; modality() reads into memory
    sub = backed.subset(split="test").drop_features({"protein": [backed.features("protein")[0]]})
    assert isinstance(sub._modalities["protein"], BackedModality)
    pd.testing.assert_frame_equal(sub.modality("protein"),
                                  cohort["csv"].subset(split="test").modality("protein").iloc[:, 1:])


@pytest.mark.parametrize("kind", ["gaussian", "bernoulli", "counts"])
def test_streaming_fit_equals_in_memory(kind, tmp_path, monkeypatch):
    import h5py

    import bayesfuse.data.source as source

    rs = np.random.RandomState(0)
    if kind == "gaussian":
        v = rs.randn(50, 30)
        v[:, :10] = np.exp(1.5 * rs.randn(50, 10))   # skewed, non-negative: log1p columns
        v[:, 5] = 3.0 * rs.randint(0, 2, 50)         # two values only: no log1p
        v[3, 4] = np.nan
        max_features = 7
    elif kind == "bernoulli":
        v, max_features = rs.randint(0, 2, (40, 12)).astype(float), None
    else:
        v, max_features = rs.negative_binomial(2, 0.01, (60, 150)).astype(float), 20
        v[:, 3] = 0.0
    df = pd.DataFrame(v, index=[f"s{i}" for i in range(len(v))], columns=[f"f{j}" for j in range(v.shape[1])])
    with h5py.File(tmp_path / "x.h5", "w") as fh:
        fh["X"] = v
    monkeypatch.setattr(source, "CHUNK_CELLS", 7 * v.shape[1])
    with h5py.File(tmp_path / "x.h5", "r") as fh:
        for mf in (None, max_features):
            a = ModalityTransform.fit("m", df, "auto", mf)
            b = ModalityTransform.fit("m", BackedModality(fh["X"], df.index, df.columns, name="m"), "auto", mf)
            assert (a.likelihood, a.features, a.library_median) == (b.likelihood, b.features, b.library_median)
            np.testing.assert_array_equal(a.log1p, b.log1p)
            np.testing.assert_allclose(b.center, a.center, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.scale, a.scale, rtol=1e-10)


def test_tidy_frames_match_arrays(cohort):
    data = cohort["csv"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical",
                               "survival": bf.heads.Survival()}, **MODEL).fit(**FIT)
    test = data.subset(split="test")
    post = model.predict(test, num_samples=6)
    frame = post.to_frame(prob=0.8)
    assert list(frame.index) == list(test.sample_ids)
    mean = post.probs("subtype").mean(axis=0, dtype=np.float64)   # as mean_probs: float64, renormalised
    mean /= mean.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(frame[("subtype", "mean")].to_numpy(), mean)
    np.testing.assert_array_equal(frame[("subtype", "mean")].to_numpy(), post.mean_probs("subtype").to_numpy())
    assert list(frame[("subtype", "mean")].columns) == post.classes("subtype")
    lo, hi = np.quantile(post.probs("subtype"), [0.1, 0.9], axis=0)
    np.testing.assert_array_equal(frame[("subtype", "lower")].to_numpy(), lo)
    np.testing.assert_array_equal(frame[("subtype", "upper")].to_numpy(), hi)
    assert (frame[("subtype", "prediction", "")] == post.predict("subtype")).all()
    times = post.default_times("survival")
    s = post.survival_function("survival", times)
    np.testing.assert_array_equal(frame[("survival", "survival_mean")].to_numpy(), s.mean(axis=0))
    np.testing.assert_array_equal(frame[("survival", "survival_mean")].columns.to_numpy(dtype=float), times)
    np.testing.assert_array_equal(post.survival_mean("survival", times).to_numpy(), s.mean(axis=0))
    np.testing.assert_array_equal(frame[("", "n_modalities", "")].to_numpy(), post.n_modalities.to_numpy())
    np.testing.assert_array_equal(frame[("", "modality_weight")].to_numpy(), post.modality_weights().to_numpy())
    np.testing.assert_array_equal(frame[("survival", "risk_mean")].to_numpy(),
                                  post.risk("survival", times).mean(axis=0))
    med = post.median_survival("survival")
    np.testing.assert_array_equal(frame[("survival", "median_survival", "median")].to_numpy(),
                                  np.quantile(med, 0.5, axis=0))
    tau = float(times[-1])
    rm = post.restricted_mean_survival("survival", tau)
    rframe = post.to_frame(prob=0.8, tau=tau)[("survival", "rmst")]
    np.testing.assert_array_equal(rframe["mean"].to_numpy(), rm.mean(axis=0))
    tail = (1 - 0.8) / 2   # the tail probability as the summaries compute it (0.09999999999999998, not 0.1)
    np.testing.assert_array_equal(rframe[["lower", "upper"]].to_numpy().T, np.quantile(rm, [tail, 1 - tail], axis=0))
    assert ("survival", "rmst", "mean") not in frame.columns      # only with tau=
    r_lo, _ = post.risk_interval("survival", times, 0.8)
    np.testing.assert_array_equal(r_lo.to_numpy(), np.quantile(post.risk("survival", times), [tail, 1 - tail], axis=0)[0])
    # MuData / AnnData exports
    mdata = post.to_mudata()
    np.testing.assert_array_equal(mdata["subtype"].X, mean)
    np.testing.assert_array_equal(mdata["survival"].layers["lower"],
                                  post.survival_interval("survival", times, 0.9)[0].to_numpy())
    np.testing.assert_array_equal(mdata.obsm["z_mean"], post.latent_loc)
    latent = model.latent(test, num_samples=6)
    adata = latent.to_anndata()
    assert list(adata.obs_names) == [str(s) for s in test.sample_ids]
    np.testing.assert_array_equal(adata.obsm["z_mean"], post.latent_loc)
    np.testing.assert_array_equal(adata.obsm["z_sd"], post.latent_scale)
    np.testing.assert_array_equal(latent.to_frame()["sd"].to_numpy(), post.latent_scale)
    imp = model.impute(test, num_samples=4)
    a = imp.to_anndata("protein")
    np.testing.assert_array_equal(a.X, imp.to_frames()["protein"].to_numpy())
    np.testing.assert_array_equal(a.layers["std"], imp.std("protein").to_numpy())
    assert set(imp.to_mudata().mod) == set(imp.modalities)
    iframe = imp.to_frame(prob=0.8)
    assert list(iframe.index) == list(test.sample_ids)
    for m in imp.modalities:
        draws = imp[m]
        np.testing.assert_array_equal(iframe[(m, "mean")].to_numpy(), draws.mean(axis=0))
        np.testing.assert_array_equal(iframe[(m, "std")].to_numpy(), draws.std(axis=0))
        lo, hi = np.quantile(draws, [tail, 1 - tail], axis=0)
        np.testing.assert_array_equal(iframe[(m, "lower")].to_numpy(), lo)
        np.testing.assert_array_equal(iframe[(m, "upper")].to_numpy(), hi)
        np.testing.assert_array_equal(iframe[(m, "value")].to_numpy(), imp.to_frames()[m].to_numpy())
        np.testing.assert_array_equal(iframe[(m, "observed")].to_numpy(), imp.observed_mask[m])
        assert list(iframe[(m, "mean")].columns) == imp.features(m)
        assert ((m, "probability") in iframe.columns) == (m in imp.probabilities)


def test_cli_fit_predict_h5mu(cohort, tmp_path):
    from bayesfuse.cli import main

    model_dir, pred = tmp_path / "model", tmp_path / "pred"
    assert main(["fit", str(cohort["h5mu"]), "--head", "subtype=categorical", "--split", "train",
                 "--max-epochs", "3", "--latent-dim", "3", "--device", "cpu", "--quiet", "--out", str(model_dir)]) == 0
    assert main(["predict", str(model_dir), str(cohort["h5mu"]), "--backed", "--split", "test", "--num-samples", "5",
                 "--device", "cpu", "--out", str(pred)]) == 0
    out = pd.read_csv(pred / "predictions.csv")
    assert out["sample_id"].nunique() == int((cohort["targets"]["split"] == "test").sum())


def test_import_stays_light():
    code = ("import sys, bayesfuse, bayesfuse.data; bayesfuse.MultiModalData; "
            "assert 'anndata' not in sys.modules and 'mudata' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
