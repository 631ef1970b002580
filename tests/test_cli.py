"""Command line: fit -> predict round trip on a tiny simulated cohort, demo in quick mode."""

import arviz as az
import pandas as pd

import bayesfuse as bf
from bayesfuse.cli import main


def _write_cohort(tmp_path):
    data, _ = bf.datasets.simulate(n_patients=120, modalities={"expr": ("gaussian", 10), "mut": ("bernoulli", 6)},
                                   missing_rate=0.2, seed=1)
    folder = tmp_path / "cohort"
    folder.mkdir()
    for m in data.modality_names:
        data.modality(m).to_csv(folder / f"{m}.csv.gz")
    data.targets.to_csv(folder / "targets.csv")
    return folder, data


def test_fit_predict_roundtrip(tmp_path, capsys):
    folder, data = _write_cohort(tmp_path)
    rc = main(["fit", str(folder), "--head", "subtype=categorical", "--split", "train", "--max-epochs", "3",
               "--latent-dim", "2", "--out", str(tmp_path / "model"), "--quiet"])
    assert rc == 0 and (tmp_path / "model" / "config.json").exists()
    rc = main(["predict", str(tmp_path / "model"), str(folder), "--split", "test", "--num-samples", "7",
               "--out", str(tmp_path / "pred")])
    assert rc == 0
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    n_test = (data.targets["split"] == "test").sum()
    assert len(pred) == n_test * 3 and set(pred.columns) >= {"sample_id", "class", "mean", "lower", "upper"}
    idata = az.from_netcdf(str(tmp_path / "pred" / "draws.nc"))
    assert idata.posterior["subtype_probs"].shape == (1, 7, n_test, 3)


def test_cli_reports_user_errors(tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "missing-model"), str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "not a saved bayesfuse model" in capsys.readouterr().err


def test_demo_quick(tmp_path, capsys):
    rc = main(["demo", "--quick", "--quiet", "--out", str(tmp_path / "demo")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "subtype" in out and "accuracy" in out and " ece " in out and "..." not in out   # every column printed
    table = pd.read_csv(tmp_path / "demo" / "metrics.csv", index_col=0)
    assert set(table.index) == {"subtype", "origin"}
    assert (table["accuracy"] > 0.5).all()   # far above chance (1/3, 1/4) even in quick mode
    for f in ("reliability_subtype.png", "intervals_origin.png", "predictions.csv", "metrics.json"):
        assert (tmp_path / "demo" / f).stat().st_size > 0


def test_fit_distributed_single_process_without_torchrun(tmp_path, monkeypatch):
    # Without torchrun's environment --distributed trains as one process (world size 1) and saves.
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    folder, _ = _write_cohort(tmp_path)
    rc = main(["fit", str(folder), "--head", "subtype=categorical", "--split", "train", "--max-epochs", "2",
               "--batch-size", "32", "--latent-dim", "2", "--distributed", "--out", str(tmp_path / "m"), "--quiet"])
    assert rc == 0
    model = bf.FusionModel.load(tmp_path / "m")
    assert len(model.history_) == 2
    assert model.train_config_["world_size"] == 1 and model.train_config_["batch_size"] == 32
    assert model.train_config_["validation_fraction"] == 0.0  # the distributed path, not fit()


def test_cli_unknown_drop_feature_names_the_column_without_python_only_advice(tmp_path, capsys):
    folder, data = _write_cohort(tmp_path)
    col = data.modality("expr").columns[0]
    rc = main(["fit", str(folder), "--head", "subtype=categorical", "--split", "train", "--max-epochs", "1",
               "--drop-features", "expr:no_such_gene", "--out", str(tmp_path / "model"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_gene" in err and "--drop-features" in err and "errors=" not in err
    rc = main(["fit", str(folder), "--head", "subtype=categorical", "--split", "train", "--max-epochs", "1",
               "--latent-dim", "2", "--drop-features", f"expr:{col}", "--out", str(tmp_path / "model"), "--quiet"])
    assert rc == 0
    features = bf.FusionModel.load(tmp_path / "model").transforms["expr"].features
    assert col not in features and len(features) == data.modality("expr").shape[1] - 1
