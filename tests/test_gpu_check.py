"""benchmarks/gpu_check.py on the CPU: argument parsing, the no-CUDA message, its CPU path at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch


def _load():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_defaults_and_errors():
    gc = _load()
    args = gc.parse([])
    assert args.device == "cuda" and (args.patients, args.modalities, args.features) == (50_000, 4, 2_000)
    assert args.batch_sizes == [256, 1024, 4096, 16384]
    with pytest.raises(SystemExit) as exc:
        gc.parse(["--batch-sizes", "0"])
    assert exc.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_no_cuda_exits_with_a_clear_message():
    gc = _load()
    with pytest.raises(SystemExit) as exc:
        gc.main(["--no-tests", "--no-tcga"])
    assert "no CUDA device" in str(exc.value.code) and "--device cpu" in str(exc.value.code)


def test_step_flops_counts_the_linear_layers():
    from bayesfuse.module.fusion_module import FusionModule
    from bayesfuse.module.heads import CategoricalHeadModule

    gc = _load()
    m = FusionModule({"a": 5}, {"a": "gaussian"}, 2, {"y": CategoricalHeadModule(2, 3)}, hidden=4)
    # encoder 5->4 (no input gradient), 4->4 (2 * latent); decoder 2->4, 4->5; head 2->3 (linear)
    b = 7
    want = 2 * b * (2 * 5 * 4 + 3 * (4 * 4 + 2 * 4 + 4 * 5 + 2 * 3))
    assert gc.step_flops(m, b) == want


def test_cpu_path_tiny(tmp_path):
    gc = _load()
    out = tmp_path / "gpu_check.json"
    rc = gc.main(["--device", "cpu", "--patients", "240", "--modalities", "2", "--features", "12", "--epochs", "2",
                  "--batch-sizes", "32", "64", "--steps", "2", "--seeds", "0", "--no-tests", "--no-tcga",
                  "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["ok"]
    (agree,) = res["agreement"]
    assert agree["d_acc"] == 0.0 and agree["d_nll"] == 0.0   # cpu vs cpu, same seed: the same fit
    assert 0.0 <= agree["mean"]["cpu"]["accuracy"] <= 1.0
    assert [r["batch_size"] for r in res["throughput"]] == [32, 64]
    for r in res["throughput"]:
        assert r["step_ms"] > 0 and r["samples_per_s"] > 0 and 0 < r["fraction_of_gemm_rate"]
