"""`bayesfuse evaluate`: report renders from the CLI on a saved model; every figure is a real PNG."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.cli import main
from bayesfuse.evaluation.report import DPI, FIGSIZE, build_report

EXPECTED_SHAPE = (int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI))


def _write_dir(data: bf.MultiModalData, path: Path) -> Path:
    path.mkdir(parents=True)
    for m in data.modality_names:
        data.modality(m).rename_axis("sample_id").reset_index().to_csv(path / f"{m}.csv.gz", index=False)
    data.targets.rename_axis("sample_id").reset_index().to_csv(path / "targets.csv", index=False)
    return path


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file(), f"missing figure {path.name}"
    raw = path.read_bytes()
    assert len(raw) > 2000 and raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    img = mpimg.imread(path)
    assert img.shape[:2] == EXPECTED_SHAPE, (path.name, img.shape)
    # not blank: a figure with axes, text and data has many distinct colours
    assert np.unique(img.reshape(-1, img.shape[-1]).round(2), axis=0).shape[0] > 20, f"{path.name} looks blank"


def _md_table(md: str, first_col: str) -> pd.DataFrame:
    """Parse the markdown table whose header starts with ``| first_col |``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_col} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return pd.DataFrame(rows, columns=[c.strip() for c in lines[start].strip("|").split("|")])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("evaluate")
    data, _ = bf.datasets.simulate(n_patients=1000, missing_rate=0.2, class_separation=4.0, seed=3)
    ids = data.sample_ids
    model = bf.FusionModel(data.subset(ids=ids[:300]), heads={"subtype": "categorical"}, latent_dim=4, hidden=32)
    model.fit(max_epochs=40, seed=0, progress=False)
    model.save(tmp / "model")
    held = data.subset(ids=ids[300:])
    return tmp, _write_dir(held, tmp / "data"), held


def test_cli_evaluate_renders_report(saved, capsys):
    tmp, data_dir, held = saved
    out = tmp / "report"
    t0 = time.perf_counter()
    rc = main(["evaluate", str(tmp / "model"), str(data_dir), "--out", str(out), "--num-samples", "100",
               "--max-risk", "0.1", "--delta", "0.1", "--starts", "4"])
    seconds = time.perf_counter() - t0
    assert rc == 0
    assert seconds < 60, f"evaluate took {seconds:.1f} s on CPU"
    printed = capsys.readouterr().out
    assert "report written to" in printed

    figs = ["reliability_subtype.png", "risk_coverage_subtype.png", "confusion_accepted_subtype.png"]
    for name in figs:
        _check_png(out / name)
    md = (out / "report.md").read_text()
    for name in figs:
        assert f"]({name})" in md, f"report.md does not embed {name}"
    assert "### Guarantee" in md
    assert re.search(r"With probability at least 90% over the draw of the \d+ calibration patients, the error "
                     r"rate among accepted patients is at most 10% \(Learn-then-Test, exact binomial p-values, fallback "
                     r"procedure from [1-4] start points at delta/[1-4] each \(Wiens 2003\)", md), "guarantee statement missing"
    assert "I don't know" in md

    # tables: consistent with each other and with the held-out cohort (350 + 350 labelled patients)
    sel = _md_table(md, "calibration patients")
    n_cal, n_test = int(sel.loc[0, "calibration patients"]), int(sel.loc[0, "test patients"])
    assert n_cal + n_test == held.n_samples and abs(n_cal - n_test) <= 3
    cov = float(sel.loc[0, "test coverage"])
    assert sel.loc[0, "certified"] == "yes" and cov > 0.05, sel  # separable classes: something certifiable
    per_class = _md_table(md, "class")
    assert per_class["n"].astype(int).sum() == n_test
    assert set(per_class["class"]) == {"S1", "S2", "S3"}
    acc_cls = (per_class["n_accepted"].astype(int)).sum()
    per_pat = _md_table(md, "pattern")
    assert per_pat["n"].astype(int).sum() == n_test
    assert per_pat["n_accepted"].astype(int).sum() == acc_cls
    assert abs(acc_cls / n_test - cov) < 2e-3
    assert len(per_pat) <= held.presence.apply(tuple, axis=1).nunique()
    conformal = _md_table(md, "alpha")
    assert set(conformal["method"]) == {"lac", "aps"} and len(conformal) == 6
    for _, row in conformal.iterrows():
        # one calibration draw + one test draw: within 4 test-binomial standard errors of 1 - alpha (n_test = 350)
        assert abs(float(row["test coverage"]) - float(row["target coverage"])) < 2 * float(row["2 s.e. (binomial)"])
    metrics = _md_table(md, "n_test")
    assert 0 < float(metrics.loc[0, "ece (15 equal-width)"]) < 0.2


def test_report_record_matches_abstainer(saved, tmp_path):
    """The report's numbers are those of an Abstainer fitted on the same calibration half."""
    tmp, _, held = saved
    model = bf.FusionModel.load(tmp / "model")
    rep = build_report(model, held, tmp_path / "r", max_risk=0.1, delta=0.1, seed=5, num_samples=100, starts=4)
    r = rep.heads["subtype"]
    assert rep.markdown.is_file() and len(rep.figures) == 3
    post = model.predict(held, num_samples=100, seed=5)
    lab = held.targets["subtype"]
    split = bf.calibration.make_splits(lab.index, lab, fractions={"calibration": 0.5, "test": 0.5}, seed=5)
    cal_ids = split.index[split.to_numpy() == "calibration"]
    test_ids = split.index[split.to_numpy() == "test"]
    ab = bf.Abstainer(max_risk=0.1, delta=0.1, starts=4).fit(bf.calibration.subset_posterior(post, cal_ids), lab, "subtype")
    rc = ab.risk_coverage(bf.calibration.subset_posterior(post, test_ids), lab)
    assert r.certified and r.threshold == ab.threshold_
    assert (r.n_calibration, r.n_test) == (len(cal_ids), len(test_ids))
    assert r.coverage == pytest.approx(rc.coverage) and r.error == pytest.approx(rc.error, nan_ok=True)


def test_cli_evaluate_unknown_head_is_a_clear_error(saved, capsys):
    tmp, data_dir, _ = saved
    rc = main(["evaluate", str(tmp / "model"), str(data_dir), "--out", str(tmp / "bad"), "--head", "nope"])
    assert rc == 2
    assert "no head 'nope'" in capsys.readouterr().err


def test_report_survival_section(tmp_path):
    """With a survival head the report adds the D-calibration histogram and the KM-vs-predicted plot."""
    import torch

    torch.set_num_threads(1)
    data, _ = bf.datasets.simulate(n_patients=500, missing_rate=0.1, n_origins=0, seed=4)
    ids = data.sample_ids
    try:
        model = bf.FusionModel(data.subset(ids=ids[:250]),
                               heads={"subtype": "categorical", "survival": bf.heads.Survival()},
                               latent_dim=4, hidden=32)
        model.fit(max_epochs=20, seed=0, progress=False)
    except (ImportError, NotImplementedError) as exc:
        pytest.skip(f"survival head not available in this tree: {exc}")
    if not hasattr(bf.Posterior, "survival_function"):
        pytest.skip("Posterior.survival_function not available in this tree")
    rep = build_report(model, data.subset(ids=ids[250:]), tmp_path, num_samples=50)
    assert rep.heads["survival"].kind == "survival"
    for name in ("d_calibration_survival.png", "km_vs_predicted_survival.png"):
        _check_png(tmp_path / name)
    md = rep.markdown.read_text()
    assert "## Head `survival` (survival)" in md and "D-calibration" in md
    # calibrated survival sections: abstention at the horizon, lower bound, joint table
    r = rep.heads["survival"]
    _check_png(tmp_path / "risk_coverage_survival.png")
    assert np.isfinite(r.horizon) and r.n_calibration > 0
    assert "High / low risk call at horizon" in md and "Lower predictive bound" in md
    assert "P(T >= L) >= 90%" in r.guarantees["lower_bound"] and "horizon" in r.guarantees["abstention"]
    lb = _md_table(md, "miscoverage alpha")
    cov = float(lb["coverage (known status)"].iloc[0])
    assert 0 <= cov <= 1 and float(lb["cut-off c0"].iloc[0]) > 0
    assert rep.multitask is not None and set(rep.multitask.index) == {"subtype", "survival"}
    g = rep.multitask_guarantee   # a 20-epoch model may certify nothing: the text then says so
    assert "Several heads at once" in md and "subtype" in g and "survival" in g
    assert "simultaneously for every head" in g or g.startswith("NOTHING CERTIFIED")
    tb = _md_table(md, "horizon")
    assert "wrong calls among accepted (IPCW)" in tb.columns
