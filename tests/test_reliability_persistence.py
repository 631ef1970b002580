"""Persistence under faults: atomic save (a killed save leaves nothing loadable), no code execution on load,
newer format versions, and a committed model of this version that later versions must keep reading."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesfuse as bf
from bayesfuse.exceptions import ModelFormatError, OutputExistsError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture_data():
    frames = {m: pd.read_csv(FIXTURES / f"cohort_{m}.csv", index_col=0) for m in ("expr", "mut")}
    for f in frames.values():
        f.index = f.index.astype(str)
    targets = pd.read_csv(FIXTURES / "cohort_targets.csv", index_col=0)
    targets.index = targets.index.astype(str)
    return bf.MultiModalData.from_frames(frames, targets=targets)


VERSIONS = sorted(p.name for p in FIXTURES.glob("model_v*") if p.is_dir())


def test_a_fixture_exists_for_the_current_format_version():
    from bayesfuse.model.persistence import FORMAT_VERSION

    assert f"model_v{FORMAT_VERSION}" in VERSIONS, "run tests/fixtures/make_model_fixture.py and commit its output"


@pytest.mark.parametrize("name", VERSIONS)
def test_committed_model_loads_and_predicts_as_recorded(fixture_data, name):
    """tests/fixtures/model_vN was written by format version N (make_model_fixture.py); keep reading it."""
    expected = json.loads((FIXTURES / f"{name}_expected.json").read_text())
    model = bf.FusionModel.load(FIXTURES / name, device="cpu")
    post = model.predict(fixture_data, num_samples=expected["num_samples"], seed=expected["seed"])
    probs = post.mean_probs("subtype")
    assert [str(i) for i in post.sample_ids] == expected["sample_ids"]
    assert [str(c) for c in probs.columns] == expected["classes"]
    np.testing.assert_allclose(probs.to_numpy(), expected["mean_probs"], atol=2e-6)
    surv = post.survival_function("survival", np.asarray(expected["times"])).mean(axis=0)
    np.testing.assert_allclose(surv, expected["mean_survival"], atol=2e-6)


def test_fixture_is_small_and_tolerates_additional_entries(tmp_path, fixture_data):
    assert sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file()) < 1_000_000
    # a later version may add optional entries (e.g. a calibration map): unknown keys are ignored
    import shutil

    shutil.copytree(FIXTURES / "model_v2", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["calibration"] = {"subtype": {"kind": "temperature", "t": 1.3}}
    cfg["something_new"] = [1, 2, 3]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    assert bf.FusionModel.load(tmp_path / "m", device="cpu").predict(fixture_data, num_samples=2).n_patients == 60


def test_newer_format_version_is_a_clear_error(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "model_v2", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="newer bayesfuse.*Upgrade"):
        bf.FusionModel.load(tmp_path / "m")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("payload", ["pickle", "torch_save", "python_code"])
def test_planted_code_in_place_of_weights_is_refused_without_running_it(tmp_path, payload):
    import shutil

    import torch

    shutil.copytree(FIXTURES / "model_v2", tmp_path / "m")
    marker = tmp_path / "executed"
    weights = tmp_path / "m" / "weights.safetensors"
    if payload == "pickle":
        weights.write_bytes(pickle.dumps(_Evil(marker)))
    elif payload == "torch_save":
        torch.save({"w": _Evil(marker)}, weights)
    else:
        weights.write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(ModelFormatError, match="corrupted or incomplete"):
        bf.FusionModel.load(tmp_path / "m")
    assert not marker.exists()
    # negative control: unpickling that payload does run code
    if payload == "pickle":
        pickle.loads(weights.read_bytes())
        assert marker.exists()


_SLOW_SAVE = r"""
import sys, time
import torch
torch.set_num_threads(1)
import bayesfuse as bf
import bayesfuse.model.persistence as P
model = bf.FusionModel.load(sys.argv[1], device="cpu")
orig = P.save_file
def slow(tensors, path, metadata=None):
    orig(dict(list(tensors.items())[:2]), path, metadata=metadata)   # half the weights on disk
    print("WRITING", flush=True)
    time.sleep(60)
P.save_file = slow
model.save(sys.argv[2], overwrite=len(sys.argv) > 3)
"""


@pytest.mark.parametrize("existing", [False, True])
def test_killed_save_never_leaves_a_loadable_half_model(tmp_path, existing):
    target = tmp_path / "saved"
    if existing:   # an earlier complete save must survive a killed overwrite unchanged
        bf.FusionModel.load(FIXTURES / "model_v2").save(target)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", _SLOW_SAVE, str(FIXTURES / "model_v2"), str(target)] + (["x"] if existing else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.time() + 120
        line = ""
        while "WRITING" not in line and time.time() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "WRITING" in line, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    if existing:
        bf.FusionModel.load(target)   # the old model, intact
    else:
        assert not target.exists()
        with pytest.raises(ModelFormatError):
            bf.FusionModel.load(target)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-saved")]
    assert len(leftovers) == 1   # the half-written temporary, never at the target path
    with pytest.raises(ModelFormatError):
        bf.FusionModel.load(leftovers[0])


def test_save_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    model = bf.FusionModel.load(FIXTURES / "model_v2")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        model.save(tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    model.save(tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "weights.safetensors"]
