"""The cohort-zoo benchmark machinery (benchmarks/zoo.py): one tiny simulator row end to end, the
JSON schema, and the acceptance rule on hand-made records (positive and negative controls)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")


def _zoo():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
    spec = importlib.util.spec_from_file_location("bench_zoo", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    except ImportError as exc:            # optional benchmark dependency (lifelines, scikit-survival) absent
        pytest.skip(f"benchmarks/zoo.py needs {exc.name}")
    return mod


@pytest.fixture(scope="module")
def zoo():
    return _zoo()


METRIC_KEYS = {"accuracy", "macro_f1", "nll", "brier", "ece", "ece_p", "fit_s", "n_train", "n_test"}


def test_tiny_simulator_row_end_to_end(zoo, tmp_path):
    row = zoo.Row("cls:sim/tiny", "classification", "sim", "subtype",
                  sim={"n_patients": 160, "modalities": {"a": ("gaussian", 12), "b": ("bernoulli", 8)}})
    doc = zoo.run_zoo([row], [0], {"latent_dim": 4, "hidden": 16}, {"max_epochs": 4}, {}, None, "t",
                      tmp_path / "zoo_t.json", log=lambda m: None)
    saved = json.loads((tmp_path / "zoo_t.json").read_text())
    assert saved["schema"] == zoo.SCHEMA and saved["tag"] == "t" and saved["seeds"] == [0]
    recs = saved["records"]
    assert [r["method"] for r in recs] == ["bayesfuse", "LR", "RF"], recs
    for r in recs:
        assert METRIC_KEYS <= set(r), set(r)
        assert r["row"] == "cls:sim/tiny" and r["seed"] == 0 and r["variant"] == "tiny"
        assert 0.0 <= r["accuracy"] <= 1.0 and r["nll"] > 0 and 0 < r["ece_p"] <= 1
    assert recs[0]["epochs"] <= 4
    table = zoo.render_table([doc])
    assert "cls:sim/tiny" in table and table.count("\n|") >= 2
    # a bayesfuse-only run (a variant) is rendered beside the run that has the baselines
    alone = zoo.run_zoo([row], [0], {"latent_dim": 4, "hidden": 16}, {"max_epochs": 2}, {}, None, "v", None,
                        log=lambda m: None, baselines=False)
    assert [r["method"] for r in alone["records"]] == ["bayesfuse"] and alone["baselines"] is False
    both = next(ln for ln in zoo.render_table([doc, alone]).splitlines() if ln.startswith("| cls:sim/tiny"))
    assert both.count("pass") + both.count("**miss**") == 2, both


def _cls(row, method, seed, acc, nll, ece):
    return {"row": row, "task": "classification", "cohort": "hand", "variant": row.split("/")[1], "seed": seed,
            "method": method, "accuracy": acc, "macro_f1": acc, "nll": nll, "ece": ece, "ece_p": 0.5,
            "fit_s": 1.0, "n_train": 100, "n_test": 50}


def _surv(row, method, seed, c, p):
    return {"row": row, "task": "survival", "cohort": "hand", "variant": row.split("/")[1], "seed": seed,
            "method": method, "harrell_c": c, "ibs": 0.2, "dcal_p": p, "fit_s": 1.0, "n_train": 100, "n_test": 50}


def hand_records():
    recs = []
    for s, d in ((0, -0.01), (1, 0.01)):       # the rule is applied to the means over the two seeds
        recs += [_cls("cls:hand/pass", "bayesfuse", s, 0.95 + d, 0.20, 0.02 + d),
                 _cls("cls:hand/pass", "LR", s, 0.95, 0.25, 0.04),
                 _cls("cls:hand/pass", "RF", s, 0.90, 0.30, 0.05),
                 _cls("cls:hand/miss", "bayesfuse", s, 0.90 + d, 0.30 + d, 0.08 + d),
                 _cls("cls:hand/miss", "LR", s, 0.93, 0.25, 0.035),
                 _cls("cls:hand/miss", "RF", s, 0.93, 0.25, 0.035),
                 _surv("surv:hand/pass", "bayesfuse", s, 0.715 + d, 0.5),
                 _surv("surv:hand/pass", "CoxPH", s, 0.72, 0.4),
                 _surv("surv:hand/pass", "RSF", s, 0.70, 0.4),
                 _surv("surv:hand/miss", "bayesfuse", s, 0.70 + d, 0.03 + d),
                 _surv("surv:hand/miss", "CoxPH", s, 0.72, 0.4),
                 _surv("surv:hand/miss", "RSF", s, 0.70, 0.4)]
    recs.append({"row": "cls:hand/skip", "task": "classification", "cohort": "hand", "variant": "skip", "seed": 0,
                 "method": None, "skipped": "training set has 50 usable patients <= 100"})
    return recs


def test_acceptance_positive_and_negative_controls(zoo):
    misses = dict(zoo.miss_list({"records": hand_records()}))
    assert set(misses) == {"cls:hand/miss", "surv:hand/miss"}
    cls = misses["cls:hand/miss"]
    assert cls == pytest.approx({"ECE": 0.08 - 0.035, "acc": (0.93 - 0.01) - 0.90, "NLL": 0.30 - 0.25})
    assert misses["surv:hand/miss"] == pytest.approx({"C": (0.72 - 0.01) - 0.70, "Dcal p": 0.05 - 0.03})
    # the ECE floor: an ECE of 0.029 passes against a better-calibrated LR (0.01)
    ok, m = zoo.acceptance("classification", {"ece": 0.029, "accuracy": 0.9, "nll": 0.3},
                           {"ece": 0.01, "accuracy": 0.9, "nll": 0.3})
    assert ok and m == {}
    # D-calibration p must exceed 0.05 strictly
    ok, m = zoo.acceptance("survival", {"harrell_c": 0.8, "dcal_p": 0.05}, {"harrell_c": 0.8})
    assert not ok and m == pytest.approx({"Dcal p": 0.0})


def test_table_reports_margins_and_comparison(zoo):
    doc = {"tag": "a", "records": hand_records()}
    table = zoo.render_table([doc])
    line = {ln.split(" | ")[0].strip("| "): ln for ln in table.splitlines() if ln.startswith("| ")}
    assert line["cls:hand/pass"].endswith("| pass |")
    assert "**miss** ECE +0.045, acc -0.020, NLL +0.050" in line["cls:hand/miss"]
    assert "**miss** C -0.010, Dcal p -0.020" in line["surv:hand/miss"]
    assert "skipped" in line["cls:hand/skip"]
    # side by side: a second tag whose bayesfuse passes everywhere
    better = [dict(r, ece=0.01, nll=0.1, accuracy=0.99) if r.get("method") == "bayesfuse" and r["task"] ==
              "classification" else r for r in hand_records()]
    two = zoo.render_table([doc, {"tag": "b", "records": better}])
    row = next(ln for ln in two.splitlines() if ln.startswith("| cls:hand/miss"))
    assert "bf[a] / bf[b]" in two and row.rstrip(" |").endswith("pass") and "**miss**" in row
    assert np.isclose(float(row.split(" | ")[3].split(" / ")[1]), 0.99)   # accuracy of tag b in its column


def test_row_selection_globs_regexes_and_an_empty_selection_says_how(zoo):
    rows = zoo.all_rows()
    names = [r.name for r in zoo.select_rows(rows, ["surv:*n100"], "survival")]
    assert names and all(n.startswith("surv:") and n.endswith("n100") for n in names)
    assert [r.name for r in zoo.select_rows(rows, ["n100$"], "survival")] == names
    assert {r.name for r in zoo.select_rows(rows, ["surv:sim*"], "all")} == {
        "surv:sim/p80", "surv:sim/p80-n150", "surv:sim/p150", "surv:sim/p150-n150"}
    with pytest.raises(SystemExit, match="No zoo row matches.*glob"):
        zoo.main(["--task", "survival", "--rows", "surv:.*n100"])


def test_resplit_rows_redraw_a_stratified_split_per_seed_and_skip_without_survset(zoo, monkeypatch):
    labels = pd.Series(np.r_[np.ones(40, int), np.zeros(120, int)], index=[f"p{i}" for i in range(160)])
    a, b = zoo.resplit(labels, 0), zoo.resplit(labels, 1)
    assert (a == "test").sum() == 40 and labels[a == "test"].sum() == 10      # 25 % test, event share kept
    assert not a.equals(b) and a.equals(zoo.resplit(labels, 0))
    rows = [r for r in zoo.all_rows() if r.resplit]
    assert {r.cohort for r in rows} == set(zoo.SURVSET) and all(r.task == "survival" for r in rows)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "SurvSet" else real(name, *a))
    train, test, info = zoo.make_split(rows[0], 0, zoo.C.DATA)
    assert train is None and "pip install SurvSet" in info["skipped"]


def test_survset_cohort_loads_as_expression_plus_clinical(zoo):
    pytest.importorskip("SurvSet")
    assert zoo.load_survset("chop").modality_names == ["expression"]
    row = next(r for r in zoo.all_rows() if r.cohort == "nki70")
    train, test, _ = zoo.make_split(row, 0, zoo.C.DATA)
    assert set(train.modality_names) == {"expression", "clinical"}
    assert train.modality("clinical").notna().all().all()
    assert train.n_samples + test.n_samples > 100 and test.n_samples > 0
    assert set(train.sample_ids).isdisjoint(test.sample_ids)
    assert train.modality("expression").shape[1] == 70
    assert set(train.targets["event"].unique()) <= {0, 1}


def test_model_kwargs_advanced_dict_becomes_config(zoo):
    import bayesfuse as bf

    out = zoo.model_kwargs_from_json({"latent_dim": 8, "advanced": {"survival_refit": "none"}})
    assert isinstance(out["advanced"], bf.AdvancedConfig) and out["advanced"].survival_refit == "none"
    assert out["latent_dim"] == 8
    assert zoo.model_kwargs_from_json({"latent_dim": 8}) == {"latent_dim": 8}
    with pytest.raises(TypeError):
        zoo.model_kwargs_from_json({"advanced": {"no_such_option": 1}})
