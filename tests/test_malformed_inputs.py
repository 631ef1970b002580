"""Catalogue of malformed inputs through the public API and the CLI (docs/reliability.md).

Each case must raise a bayesfuse exception (``BayesFuseError`` subclass) whose message matches a
pattern naming the problem (and, where there is one, the fix); never a torch / pandas traceback,
a NaN or a silently wrong answer. CLI cases must exit with status 2 and one ``bayesfuse: error:``
line on stderr.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.exceptions import BayesFuseError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL = FIXTURES / "model_v2"


def _frames():
    frames = {m: pd.read_csv(FIXTURES / f"cohort_{m}.csv", index_col=0) for m in ("expr", "mut")}
    t = pd.read_csv(FIXTURES / "cohort_targets.csv", index_col=0)
    for f in (*frames.values(), t):
        f.index = f.index.astype(str)
    return frames, t


def _data(frames=None, targets=None):
    f, t = _frames()
    return bf.MultiModalData.from_frames(frames if frames is not None else f, targets=targets if targets is not None
                                         else t)


def _model():
    return bf.FusionModel.load(MODEL, device="cpu")


def _with(modality, fn):
    f, t = _frames()
    f[modality] = fn(f[modality].copy())
    return f, t


def _targets(fn):
    f, t = _frames()
    return f, fn(t.copy())


def _fit(heads, targets_fn=None, **kw):
    f, t = _frames()
    if targets_fn is not None:
        t = targets_fn(t.copy())
    return bf.FusionModel(bf.MultiModalData.from_frames(f, targets=t), heads=heads, latent_dim=2, hidden=4,
                          device="cpu").fit(max_epochs=2, progress=False, **kw)


def _saved(tmp, edit):
    dst = tmp / "m"
    shutil.copytree(MODEL, dst)
    edit(dst)
    return bf.FusionModel.load(dst)


def _set(df, row, col, value):
    df.iloc[row, df.columns.get_loc(col) if isinstance(col, str) else col] = value
    return df


# ----------------------------------------------------------------------------- API cases
API = {
    # ids
    "duplicate sample ids": (lambda tmp: _data(*_with("expr", lambda d: pd.concat([d, d.iloc[:1]]))),
                             "duplicated sample ids"),
    "duplicate target ids": (lambda tmp: _data(*_targets(lambda t: pd.concat([t, t.iloc[:1]]))),
                             "duplicated sample ids"),
    "duplicate feature names": (lambda tmp: _data(*_with("expr", lambda d: d.set_axis(["g"] * d.shape[1], axis=1))),
                                "duplicated feature names"),
    "modality not a DataFrame": (lambda tmp: bf.MultiModalData.from_frames({"expr": np.ones((3, 2))}),
                                 "must be a pandas DataFrame"),
    "modalities not a dict": (lambda tmp: bf.MultiModalData.from_frames([1, 2]), "must be a dict"),
    "targets not a DataFrame": (lambda tmp: bf.MultiModalData.from_frames(_frames()[0], targets=[1]),
                                "targets must be a DataFrame"),
    # dtypes, NaN / inf
    "string column": (lambda tmp: _data(*_with("expr", lambda d: d.assign(g_str="a"))), "non-numeric columns"),
    "inf value": (lambda tmp: _data(*_with("expr", lambda d: _set(d, 0, 0, np.inf))), "inf values"),
    "-inf value": (lambda tmp: _data(*_with("expr", lambda d: _set(d, 3, 1, -np.inf))), "inf values"),
    "all-NaN modality": (lambda tmp: _data(*_with("mut", lambda d: d * np.nan)), "entirely NaN"),
    # empty frames / shapes
    "no feature columns": (lambda tmp: _data(*_with("expr", lambda d: d.iloc[:, :0])), "no feature columns"),
    "empty cohort": (lambda tmp: bf.MultiModalData.from_frames({"expr": pd.DataFrame({"g": []})}),
                     "No samples"),
    "empty subset predict": (lambda tmp: _model().predict(_data().subset(ids=[]), num_samples=3), "no patients"),
    "no modality for model": (lambda tmp: bf.FusionModel(bf.MultiModalData.from_frames({}, targets=_frames()[1])),
                              "no modality|No samples"),
    "data is a DataFrame": (lambda tmp: _model().predict(_frames()[0]["expr"]), "must be a bf.MultiModalData"),
    "missing feature at predict": (lambda tmp: _model().predict(_data(*_with("expr", lambda d: d.iloc[:, 1:]))),
                                   "missing|feature"),
    "extra feature at predict": (lambda tmp: _model().predict(_data(*_with("expr", lambda d: d.assign(extra=1.0)))),
                                 "extra|unseen|not in the model|feature"),
    "unknown modality at predict": (lambda tmp: _model().predict(_data({**_frames()[0],
                                                                       "rna": _frames()[0]["expr"]})),
                                    "not trained on.*drop_modalities"),
    # arguments
    "num_samples 0": (lambda tmp: _model().predict(_data(), num_samples=0), "num_samples=0 must be >= 1"),
    "num_samples negative": (lambda tmp: _model().predict(_data(), num_samples=-5), "num_samples=-5"),
    "impute num_samples 0": (lambda tmp: _model().impute(_data(), num_samples=0), "num_samples"),
    "impute unknown modality": (lambda tmp: _model().impute(_data(), modalities=["rna"]), "rna"),
    "latent_dim 0": (lambda tmp: bf.FusionModel(_data(), latent_dim=0), "latent_dim=0 must be .auto. or an integer >= 1"),
    "unknown bayesian mode": (lambda tmp: bf.FusionModel(_data(), bayesian="yes"), "bayesian='yes'"),
    "likelihood for unknown modality": (lambda tmp: bf.FusionModel(_data(), likelihoods={"rna": "gaussian"}),
                                        "unknown modalities"),
    "validation_fraction 1.5": (lambda tmp: _fit({}, validation_fraction=1.5), r"validation_fraction=1.5"),
    "checkpoint_every without dir": (lambda tmp: _fit({}, checkpoint_every=2), "checkpoint_dir"),
    "max_retries negative": (lambda tmp: _fit({}, max_retries=-1), "max_retries"),
    "resume from a missing path": (lambda tmp: _fit({}, resume=tmp / "nope"), "holds no bayesfuse checkpoint"),
    "predict before fit": (lambda tmp: bf.FusionModel(_data(), latent_dim=2).predict(_data()), "not fitted"),
    "fit a loaded model": (lambda tmp: _model().fit(), "keeps no training data"),
    # heads and labels
    "unknown head type": (lambda tmp: bf.FusionModel(_data(), heads={"subtype": "regression"}),
                          "Unknown head type 'regression'"),
    "head on a missing column": (lambda tmp: bf.FusionModel(_data(), heads={"grade": "categorical"}), "grade"),
    "head object of wrong type": (lambda tmp: bf.FusionModel(_data(), heads={"subtype": 3}), "must be a string"),
    "head weight 0": (lambda tmp: bf.FusionModel(_data(), heads={"subtype": bf.heads.Categorical(weight=0)}),
                      "weight must be > 0"),
    "single class": (lambda tmp: _fit({"subtype": "categorical"}, lambda t: t.assign(subtype="A")),
                     "class|label"),
    "all labels missing": (lambda tmp: _fit({"subtype": "categorical"}, lambda t: t.assign(subtype=np.nan)),
                           "class|label|no known"),
    # survival
    "negative survival time": (lambda tmp: _fit({"survival": "survival"}, lambda t: _set(t, 0, "time", -1.0)),
                               "time"),
    "zero survival time": (lambda tmp: _fit({"survival": "survival"}, lambda t: _set(t, 0, "time", 0.0)),
                           "nonpositive_times"),
    "infinite survival time": (lambda tmp: _fit({"survival": "survival"}, lambda t: _set(t, 0, "time", np.inf)),
                               "time"),
    "event coded 2": (lambda tmp: _fit({"survival": "survival"}, lambda t: _set(t, 0, "event", 2)), "event"),
    "event as text": (lambda tmp: _fit({"survival": "survival"}, lambda t: t.assign(event="dead")), "event"),
    "survival time column missing": (lambda tmp: bf.FusionModel(_data(), heads={"s": bf.heads.Survival(time="os")}),
                                     "os"),
    "bad nonpositive_times option": (lambda tmp: bf.heads.Survival(nonpositive_times="clip"), "nonpositive_times"),
    "survival at negative times": (lambda tmp: _model().predict(_data(), num_samples=3).survival_function(
        "survival", [-1.0]), "negative"),
    "survival for an unknown head": (lambda tmp: _model().predict(_data(), num_samples=3).survival_function(
        "subtype", [1.0]), "survival|head"),
    # files
    "load a missing path": (lambda tmp: bf.FusionModel.load(tmp / "nope"), "not a saved bayesfuse model"),
    "load a file": (lambda tmp: bf.FusionModel.load(FIXTURES / "cohort_expr.csv"), "not a saved bayesfuse model"),
    "truncated weights": (lambda tmp: _saved(tmp, lambda d: (d / "weights.safetensors").write_bytes(
        (MODEL / "weights.safetensors").read_bytes()[:500])), "corrupted or incomplete"),
    "truncated config": (lambda tmp: _saved(tmp, lambda d: (d / "config.json").write_text(
        (MODEL / "config.json").read_text()[:200])), "not a readable model configuration"),
    "config not an object": (lambda tmp: _saved(tmp, lambda d: (d / "config.json").write_text("[1, 2]")),
                             "not a JSON object"),
    "config missing entries": (lambda tmp: _saved(tmp, lambda d: (d / "config.json").write_text(
        json.dumps({"format_version": 2}))), "corrupted or incomplete"),
    "format version 0": (lambda tmp: _saved(tmp, lambda d: (d / "config.json").write_text(
        json.dumps({**json.loads((MODEL / "config.json").read_text()), "format_version": 0}))), "version 0"),
    "weights of another model": (lambda tmp: _saved(tmp, lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((MODEL / "config.json").read_text()), "model": {
            **json.loads((MODEL / "config.json").read_text())["model"], "hidden": 3}}))), "corrupted|do not match"),
    "read_dir missing folder": (lambda tmp: bf.MultiModalData.read_dir(tmp / "nope"), "does not exist"),
    "read_dir empty folder": (lambda tmp: bf.MultiModalData.read_dir(tmp), "No <modality>.csv.gz"),
    "read_dir truncated gzip": (lambda tmp: bf.MultiModalData.read_dir(_truncated_gzip_dir(tmp)),
                                "expr.*(truncated|corrupt|unreadable|could not)"),
    "read_dir binary garbage": (lambda tmp: bf.MultiModalData.read_dir(_garbage_dir(tmp)),
                                "expr.*(corrupt|unreadable|could not)"),
    "subset unknown split": (lambda tmp: _data().subset(split="validation"), "split.*not found"),
    "subset unknown ids": (lambda tmp: _data().subset(ids=["nobody"]), "not in this data"),
}


def _truncated_gzip_dir(tmp):
    d = tmp / "trunc"
    d.mkdir()
    f, t = _frames()
    f["expr"].to_csv(d / "expr.csv.gz")
    raw = (d / "expr.csv.gz").read_bytes()
    (d / "expr.csv.gz").write_bytes(raw[: len(raw) // 2])
    t.to_csv(d / "targets.csv")
    return d


def _garbage_dir(tmp):
    d = tmp / "garbage"
    d.mkdir()
    (d / "expr.csv.gz").write_bytes(gzip.compress(bytes(range(256)) * 20))
    return d


@pytest.mark.parametrize("case", list(API), ids=list(API))
def test_api_malformed_input(case, tmp_path):
    fn, pattern = API[case]
    with pytest.raises(BayesFuseError, match=pattern):
        fn(tmp_path)


# ----------------------------------------------------------------------------- CLI cases
def _cohort_dir(tmp):
    d = tmp / "cohort"
    d.mkdir(exist_ok=True)
    f, t = _frames()
    for m, df in f.items():
        df.to_csv(d / f"{m}.csv.gz")
    t.to_csv(d / "targets.csv")
    return d


def _bad_csv(tmp):
    p = tmp / "bad.csv"
    p.write_bytes(b"\x00\x01\x02garbage\xff\xfe")
    return p


def _no_id_csv(tmp):
    p = tmp / "noid.csv"
    _frames()[0]["expr"].reset_index(drop=True).to_csv(p, index=False)
    return p


def _nonempty(tmp):
    d = tmp / "taken"
    d.mkdir(exist_ok=True)
    (d / "keep.txt").write_text("x")
    return d


CLI = {
    "fit missing data folder": (lambda t: ["fit", str(t / "nope"), "--out", str(t / "m")], "does not exist"),
    "fit --modality without path": (lambda t: ["fit", "--modality", "expr", "--out", str(t / "m")], "NAME=PATH"),
    "fit --modality missing file": (lambda t: ["fit", "--modality", f"expr={t / 'no.csv'}", "--out", str(t / "m")],
                                    "no.csv"),
    "fit --modality unreadable csv": (lambda t: ["fit", "--modality", f"expr={_bad_csv(t)}", "--out", str(t / "m")],
                                      "bad.csv"),
    "fit --modality without sample_id": (lambda t: ["fit", "--modality", f"expr={_no_id_csv(t)}", "--out",
                                                    str(t / "m")], "sample_id"),
    "fit unknown head kind": (lambda t: ["fit", str(_cohort_dir(t)), "--head", "subtype=ordinal", "--out",
                                         str(t / "m")], "unknown head type"),
    "fit survival head with one column": (lambda t: ["fit", str(_cohort_dir(t)), "--head", "s=survival:time",
                                                     "--out", str(t / "m")], "TIME,EVENT"),
    "fit bad --drop-features": (lambda t: ["fit", str(_cohort_dir(t)), "--drop-features", "expr", "--out",
                                           str(t / "m")], "MODALITY:COL"),
    "fit unknown split": (lambda t: ["fit", str(_cohort_dir(t)), "--split", "valid", "--out", str(t / "m")],
                          "not found"),
    "fit existing output": (lambda t: ["fit", str(_cohort_dir(t)), "--out", str(_nonempty(t))], "--overwrite"),
    "predict missing model": (lambda t: ["predict", str(t / "nope"), str(_cohort_dir(t)), "--out", str(t / "p")],
                              "not a saved bayesfuse model"),
    "predict num-samples 0": (lambda t: ["predict", str(MODEL), str(_cohort_dir(t)), "--num-samples", "0", "--out",
                                         str(t / "p")], "num_samples=0"),
    "predict existing output": (lambda t: ["predict", str(MODEL), str(_cohort_dir(t)), "--out", str(_nonempty(t))],
                                "--overwrite"),
    "predict truncated data file": (lambda t: ["predict", str(MODEL), str(_truncated_gzip_dir(t)), "--out",
                                               str(t / "p")], "expr"),
    "evaluate existing output": (lambda t: ["evaluate", str(MODEL), str(_cohort_dir(t)), "--out",
                                            str(_nonempty(t))], "--overwrite"),
    "demo existing output": (lambda t: ["demo", "--quick", "--quiet", "--out", str(_nonempty(t))], "--overwrite"),
}


@pytest.mark.parametrize("case", list(CLI), ids=list(CLI))
def test_cli_malformed_input(case, tmp_path, capsys):
    argv, pattern = CLI[case]
    rc = main(argv(tmp_path))
    assert _cli_error(rc, capsys, pattern), pattern


def _cli_error(rc, capsys, pattern) -> bool:
    """Whether the CLI exited 2 with one ``bayesfuse: error:`` line matching ``pattern`` (no traceback)."""
    import re

    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("bayesfuse: error:") and "Traceback" not in err, err
    return re.search(pattern, err) is not None


# ----------------------------------------------------------------------------- scverse cases (optional extra)
def _adatas(edit=None):
    """The fixture cohort as {modality: AnnData} plus its targets; ``edit(adatas)`` changes them in place."""
    import anndata as ad

    f, t = _frames()
    out = {m: ad.AnnData(df.to_numpy(), obs=pd.DataFrame(index=df.index), var=pd.DataFrame(index=df.columns))
           for m, df in f.items()}
    if edit is not None:
        edit(out)
    return out, t


def _mudata(edit=None):
    import mudata as md

    adatas, t = _adatas(edit)
    mdata = md.MuData(adatas)
    for c in t.columns:
        mdata.obs[c] = t.reindex(mdata.obs_names)[c].to_numpy()
    return mdata


def _dup_obs(adatas):
    a = adatas["expr"]
    adatas["expr"] = a[[*a.obs_names, a.obs_names[0]]].copy()   # one sample measured twice


def _text_layer(adatas):
    a = adatas["expr"]
    adatas["expr"].layers["raw"] = np.full(a.shape, "high", dtype=object)


def _h5mu(tmp, edit=None):
    path = tmp / "cohort.h5mu"
    _mudata(edit).write(path)
    return path


def _backed_dup(tmp):
    import anndata as ad

    adatas, _ = _adatas(_dup_obs)
    adatas["expr"].write_h5ad(tmp / "expr.h5ad")
    return bf.MultiModalData.from_anndata({"expr": ad.read_h5ad(tmp / "expr.h5ad", backed="r")})


def _garbage_h5mu(tmp):
    path = tmp / "broken.h5mu"
    path.write_bytes(b"not an HDF5 file\x00" * 64)
    return path


SCVERSE = {
    "MuData duplicated obs_names": (lambda tmp: bf.MultiModalData.from_mudata(_mudata(_dup_obs)),
                                    r"duplicated sample ids \(obs_names\).*obs_names_make_unique"),
    "backed AnnData duplicated obs_names": (_backed_dup, r"duplicated sample ids \(obs_names\)"),
    "MuData non-numeric layer": (lambda tmp: bf.MultiModalData.from_mudata(_mudata(_text_layer), layer="raw"),
                                 r"layers\['raw'\] has dtype object, not numbers.*astype\(float\)"),
    "MuData missing named layer": (lambda tmp: bf.MultiModalData.from_mudata(_mudata(), layer="counts"),
                                   r"no layer 'counts'.*layer=None"),
    "MuData target column absent": (lambda tmp: bf.MultiModalData.from_mudata(_mudata(), targets=["grade"]),
                                    r"'grade' is neither an obs column.*Add it to obs"),
    "MuData unknown modality": (lambda tmp: bf.MultiModalData.from_mudata(_mudata(), modalities=["rna"]),
                                r"\['rna'\] are not in the MuData; its modalities are"),
    "from_mudata given a dict": (lambda tmp: bf.MultiModalData.from_mudata(_adatas()[0]),
                                 "expects a mudata.MuData.*from_anndata"),
    "from_anndata given DataFrames": (lambda tmp: bf.MultiModalData.from_anndata(_frames()[0]),
                                      "not an AnnData.*from_frames"),
    "from_anndata obs lacks samples": (lambda tmp: bf.MultiModalData.from_anndata(
        _adatas()[0], obs=_frames()[1].iloc[:3]), "not in targets"),
    "h5mu path missing": (lambda tmp: bf.MultiModalData.from_mudata(tmp / "nope.h5mu"), "does not exist"),
    "h5mu not an HDF5 file": (lambda tmp: bf.MultiModalData.from_mudata(_garbage_h5mu(tmp)),
                              r"could not be read as a MuData \.h5mu file.*mdata\.write"),
}


_MUDATA_NOTICES = [pytest.mark.filterwarnings("ignore::FutureWarning:mudata.*"),   # pull_on_update notice
                   pytest.mark.filterwarnings("ignore:(obs_names|Observation names) are not unique:UserWarning")]


@pytest.mark.parametrize("case", list(SCVERSE), ids=list(SCVERSE))
@_MUDATA_NOTICES[0]
@_MUDATA_NOTICES[1]
def test_scverse_malformed_input(case, tmp_path):
    pytest.importorskip("mudata")
    fn, pattern = SCVERSE[case]
    with pytest.raises(BayesFuseError, match=pattern):
        fn(tmp_path)


SCVERSE_CLI = {
    "fit h5mu not an HDF5 file": (lambda t: ["fit", str(_garbage_h5mu(t)), "--out", str(t / "m")],
                                  "could not be read as a MuData"),
    "fit h5mu missing layer": (lambda t: ["fit", str(_h5mu(t)), "--layer", "counts", "--out", str(t / "m")],
                               "no layer 'counts'"),
    "fit h5mu head on a missing column": (lambda t: ["fit", str(_h5mu(t)), "--head", "grade=categorical", "--out",
                                                     str(t / "m")], "grade"),
    "fit --backed with a CSV folder": (lambda t: ["fit", str(_cohort_dir(t)), "--backed", "--out", str(t / "m")],
                                       "--backed and --layer apply to an .h5mu file"),
}


@pytest.mark.parametrize("case", list(SCVERSE_CLI), ids=list(SCVERSE_CLI))
@_MUDATA_NOTICES[0]
def test_scverse_cli_malformed_input(case, tmp_path, capsys):
    pytest.importorskip("mudata")
    argv, pattern = SCVERSE_CLI[case]
    rc = main(argv(tmp_path))
    assert _cli_error(rc, capsys, pattern), pattern


def test_existing_output_untouched_and_overwrite_replaces_it(tmp_path, capsys):
    d = _cohort_dir(tmp_path)
    out = _nonempty(tmp_path)
    assert main(["predict", str(MODEL), str(d), "--num-samples", "3", "--out", str(out)]) == 2
    assert (out / "keep.txt").exists()
    assert main(["predict", str(MODEL), str(d), "--num-samples", "3", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["draws.nc", "predictions.csv", "survival_survival.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_no_events_at_all_is_a_warning_not_silent():
    with pytest.warns(bf.exceptions.DataWarning, match="no event"):
        _fit({"survival": "survival"}, lambda t: t.assign(event=0))


def test_catalogue_has_at_least_40_cases():
    assert len(API) + len(CLI) >= 40
    assert len(SCVERSE) + len(SCVERSE_CLI) >= 10
