"""Class labels are kept as the text of the label column (0/1-coded cohorts end to end) and logs stay readable."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

import bayesfuse as bf
from bayesfuse._labels import class_list, label_codes, label_text
from bayesfuse.cli import main
from bayesfuse.train.progress import EpochProgress

torch.set_num_threads(1)


def test_label_text_rules():
    assert [label_text(v) for v in (0, np.int64(1), 1.0, np.float32(2.0), 2.5, "01", True, None, np.nan)] == \
        ["0", "1", "1", "2", "2.5", "01", "True", None, None]
    assert class_list([10, 2, "b", "a", np.nan, 2.0]) == ["2", "10", "a", "b"]
    codes = label_codes([0, "1", 1.0, "1.0", "x", None, np.nan], ["0", "1"])
    assert codes.tolist() == [0, 1, 1, 1, -2, -1, -1]


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory):
    """A CSV folder whose label column is coded 0/1 (with one unknown label), like many public cohorts."""
    data, _ = bf.datasets.simulate(n_patients=500, n_subtypes=2, n_origins=0, class_separation=4.0, seed=4)
    path = tmp_path_factory.mktemp("binary")
    for m in data.modality_names:
        data.modality(m).rename_axis("sample_id").reset_index().to_csv(path / f"{m}.csv.gz", index=False)
    t = data.targets.copy()
    t["subtype"] = t["subtype"].map({"S1": 0, "S2": 1}).astype("Int64")
    t.iloc[3, t.columns.get_loc("subtype")] = pd.NA     # blank cell: pandas would read the column as float
    t.rename_axis("sample_id").reset_index().to_csv(path / "targets.csv", index=False)
    return path


def test_binary_labels_round_trip(binary_dir, tmp_path):
    data = bf.MultiModalData.read_dir(binary_dir)
    train, test = data.subset(split="train"), data.subset(split="test")
    model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    model.fit(max_epochs=40, seed=0, progress=False)
    assert model.heads["subtype"].classes == ["0", "1"]
    post = model.predict(test, 50)
    assert post.classes("subtype") == ["0", "1"]
    assert set(post.predict("subtype").unique()) <= {"0", "1"}
    assert list(post.mean_probs("subtype").columns) == ["0", "1"]
    # labels as a user reads them from targets.csv: numbers (floats, because of the blank) or text
    raw = pd.read_csv(binary_dir / "targets.csv", index_col="sample_id").loc[test.sample_ids, "subtype"]
    text = pd.read_csv(binary_dir / "targets.csv", index_col="sample_id", dtype=str).loc[test.sample_ids, "subtype"]
    assert raw.dtype.kind == "f" and text.dtype == object
    ids = test.sample_ids[test.targets["subtype"].notna().to_numpy()]
    half = len(ids) // 2
    from bayesfuse.calibration import subset_posterior

    cal, tst = subset_posterior(post, ids[:half]), subset_posterior(post, ids[half:])
    fits = [bf.Abstainer(max_risk=0.1, delta=0.1).fit(cal, lab.loc[ids[:half]], head="subtype") for lab in (raw, text)]
    assert fits[0].threshold_ == fits[1].threshold_
    pred = fits[0].predict(tst)
    assert set(pred["prediction"].dropna().unique()) <= {"0", "1", bf.calibration.ABSTAIN}
    sets = [bf.ConformalSets(alpha=0.1).fit(cal, lab.loc[ids[:half]], head="subtype") for lab in (raw, text)]
    assert sets[0].quantile_ == sets[1].quantile_
    from bayesfuse.evaluation.classification import evaluate_classification

    assert evaluate_classification(post, raw, "subtype").accuracy == \
        evaluate_classification(post, text, "subtype").accuracy > 0.8
    # evaluate / report from the CLI on the saved model and the CSV folder
    model.save(tmp_path / "model")
    rc = main(["evaluate", str(tmp_path / "model"), str(binary_dir), "--out", str(tmp_path / "report"),
               "--num-samples", "50"])
    assert rc == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "not among the model's classes" not in md
    assert "| 0 |" in md and "| 1 |" in md


def test_integer_classes_given_by_the_user_become_text():
    data, _ = bf.datasets.simulate(n_patients=120, n_subtypes=2, n_origins=0, seed=1)
    t = data.targets.copy()
    t["subtype"] = t["subtype"].map({"S1": 1, "S2": 2})
    d = bf.MultiModalData.from_frames({m: data.modality(m) for m in data.modality_names}, t)
    m = bf.FusionModel(d, heads={"subtype": bf.heads.Categorical(classes=[2, 1, 3])}, latent_dim=2, hidden=0)
    assert m.heads["subtype"].classes == ["2", "1", "3"]
    with pytest.raises(bf.exceptions.DataError, match="not among classes"):
        bf.FusionModel(d, heads={"subtype": bf.heads.Categorical(classes=["1"])})


# --------------------------------------------------------------------------------- progress
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_quiet_off_a_terminal():
    """A log file gets a summary line, not a carriage-return update per epoch."""
    log = io.StringIO()
    bar = EpochProgress(500, stream=log, interval=30.0)
    for _ in range(500):
        bar.update(1.0, 2.0)
    bar.close(best_epoch=400, stopped_early=False)
    out = log.getvalue()
    assert "\r" not in out and out.count("\n") == 1 and "best epoch 400" in out
    tty = _Tty()
    bar = EpochProgress(50, stream=tty)
    for _ in range(50):
        bar.update(1.0, 2.0)
    bar.close(best_epoch=10, stopped_early=True)
    assert "\r" in tty.getvalue()                 # a terminal still gets the live bar


def test_fit_writes_few_lines_to_a_captured_stderr(capsys):
    data, _ = bf.datasets.simulate(n_patients=150, seed=2)
    bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=16).fit(max_epochs=60, seed=0)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") <= 3 and len(err) < 500, err
