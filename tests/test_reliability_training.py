"""Training under faults and interruption: non-finite steps, retries, ConvergenceError naming the cause,
KeyboardInterrupt keeping a usable model, atomic checkpoints and bit-identical resume (docs/reliability.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import bayesfuse as bf
from bayesfuse.exceptions import ConvergenceError, ConvergenceWarning, ModelFormatError
from bayesfuse.model.fusion_model import FusionModel
from bayesfuse.train import checkpoint as ckpt_mod
from bayesfuse.train import svi as svi_mod

FIT = {"max_epochs": 12, "batch_size": 32, "kl_warmup_epochs": 2, "patience": 50, "progress": False, "seed": 3}


@pytest.fixture(scope="module")
def cohort():
    data, _ = bf.datasets.simulate(n_patients=80, latent_dim=2, modalities={"a": ("gaussian", 6),
                                                                            "b": ("gaussian", 4)},
                                   n_origins=0, missing_rate=0.2, seed=1)
    return data


def _model(data, **kw):
    return bf.FusionModel(data, heads={"subtype": "categorical", "survival": "survival"}, latent_dim=2, hidden=8,
                          device="cpu", **kw)


def _params(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _nan_decoder(monkeypatch, modality, calls):
    """Make the decoder of ``modality`` return NaN on the forward calls numbered in ``calls``."""
    build = FusionModel._build_module
    counter = {"n": 0}

    def patched(self):
        module = build(self)

        def hook(_mod, _inp, out):
            counter["n"] += 1
            if module.training and counter["n"] in calls:
                return {k: v * float("nan") for k, v in out.items()}
            return out

        module.decoders[modality].register_forward_hook(hook)
        return module

    monkeypatch.setattr(FusionModel, "_build_module", patched)


def test_transient_nan_step_is_skipped_and_epoch_retried_with_lower_lr(cohort, monkeypatch):
    _nan_decoder(monkeypatch, "b", calls={5})
    m = _model(cohort)
    with pytest.warns(ConvergenceWarning, match="rerunning the epoch"):
        m.fit(**FIT)
    assert len(m.fit_faults_) == 1 and m.fit_faults_[0]["faulty_steps"] == 1
    assert m.fit_faults_[0]["lr"] == pytest.approx(2e-3 * 0.3)
    assert all(torch.isfinite(p).all() for p in m.module.parameters())
    assert len(m.history_) == FIT["max_epochs"] and np.isfinite(m.history_["train_loss"]).all()
    p = m.predict(cohort, num_samples=5).mean_probs("subtype")
    assert np.isfinite(p.to_numpy()).all()


def test_persistent_nan_names_the_modality(cohort, monkeypatch):
    _nan_decoder(monkeypatch, "b", calls=set(range(3, 10**6)))
    m = _model(cohort)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ConvergenceError, match=r"modality 'b'.*reconstruction") as err:
            m.fit(**FIT, max_retries=2)
    assert "after 2 retries" in str(err.value) and "lower lr=" in str(err.value).lower()


def test_fault_step_leaves_parameters_and_adam_state_untouched(cohort):
    """Negative control of the on-device skip: the same step with a finite loss does move them."""
    m = _model(cohort)
    store = m._store(cohort, strict_targets=True)
    m.module = m._build_module()
    optim = svi_mod.make_optimizer(m.module, 1e-2)
    params = list(m.module.parameters())
    cfg = svi_mod.TrainConfig()
    idx = torch.arange(16)
    svi_mod.svi_step(m.module, optim, params, store, idx, 1.0, cfg)
    before = [p.detach().clone() for p in params]
    steps = [optim.state[p]["step"].clone() for p in params]
    h = m.module.decoders["a"].register_forward_hook(lambda _m, _i, out: {k: v + float("inf") for k, v in out.items()})
    flags = []
    svi_mod.svi_step(m.module, optim, params, store, idx, 1.0, cfg, flags)
    assert float(flags[0]) == 1.0
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    assert all(torch.equal(s, optim.state[p]["step"]) for s, p in zip(steps, params))
    h.remove()
    svi_mod.svi_step(m.module, optim, params, store, idx, 1.0, cfg, flags)
    assert float(flags[1]) == 0.0 and not all(torch.equal(a, p) for a, p in zip(before, params))


def _interrupt_at(monkeypatch, epoch_calls):
    """Raise KeyboardInterrupt in the validation criterion on its ``epoch_calls``-th call (an epoch's end)."""
    counter = {"n": 0}

    def patch(name):
        orig = getattr(svi_mod, name)

        def patched(*a, **k):
            counter["n"] += 1
            if counter["n"] == epoch_calls:
                raise KeyboardInterrupt
            return orig(*a, **k)

        monkeypatch.setattr(svi_mod, name, patched)

    patch("validation_loss")
    patch("validation_head_nll")


def test_keyboard_interrupt_keeps_best_model_usable(cohort, monkeypatch):
    _interrupt_at(monkeypatch, 7)
    m = _model(cohort)
    with pytest.warns(ConvergenceWarning, match="interrupted.*usable"):
        m.fit(**FIT)
    assert m.interrupted_ and m.stopped_early_ and len(m.history_) == 6
    assert np.isfinite(m.predict(cohort, num_samples=4).mean_probs("subtype").to_numpy()).all()


def test_resume_is_bit_identical_to_uninterrupted_run(cohort, monkeypatch, tmp_path):
    full = _model(cohort).fit(**FIT)
    ref = _params(full)
    ck = tmp_path / "ck"
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 9)
        with pytest.warns(ConvergenceWarning):
            _model(cohort).fit(**FIT, checkpoint_dir=ck, checkpoint_every=3)
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-000002", "epoch-000005"]   # two kept, no temporaries
    resumed = _model(cohort).fit(**FIT, resume=ck)
    got = _params(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    np.testing.assert_array_equal(full.history_["train_loss"], resumed.history_["train_loss"])
    # negative control: without the RNG states the continued run differs
    monkeypatch.setattr(ckpt_mod, "restore_rng", lambda *a, **k: None)
    # (the continued epochs' losses: the returned parameters are the best epoch's, which may predate the resume)
    other = _model(cohort).fit(**FIT, resume=ck)
    assert not np.array_equal(full.history_["train_loss"], other.history_["train_loss"])


def test_resume_refuses_other_settings_and_missing_checkpoints(cohort, tmp_path):
    ck = tmp_path / "ck"
    _model(cohort).fit(**{**FIT, "max_epochs": 3}, checkpoint_dir=ck, checkpoint_every=1)
    with pytest.raises(ModelFormatError, match="other settings"):
        _model(cohort).fit(**{**FIT, "max_epochs": 3, "lr": 1e-2}, resume=ck)
    with pytest.raises(ModelFormatError, match="holds no bayesfuse checkpoint"):
        _model(cohort).fit(**FIT, resume=tmp_path / "nothing")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _model(cohort).fit(**FIT, checkpoint_every=2)


def test_checkpoint_write_is_atomic(cohort, monkeypatch, tmp_path):
    """A failure while writing leaves no partial checkpoint folder (only complete ones)."""
    ck = tmp_path / "ck"
    calls = {"n": 0}
    orig = ckpt_mod.save_file

    def failing(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            orig(dict(list(tensors.items())[:1]), path, metadata=metadata)
            raise OSError("disk full")
        return orig(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt_mod, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        _model(cohort).fit(**FIT, checkpoint_dir=ck, checkpoint_every=2)
    assert [p.name for p in ck.iterdir()] == ["epoch-000001"]
    assert ckpt_mod.latest_checkpoint(ck).name == "epoch-000001"


def test_cli_fit_resume_from_checkpoints(cohort, tmp_path, capsys):
    from bayesfuse.cli import main

    folder = tmp_path / "cohort"
    folder.mkdir()
    for m in cohort.modality_names:
        cohort.modality(m).to_csv(folder / f"{m}.csv.gz")
    cohort.targets.to_csv(folder / "targets.csv")
    args = ["fit", str(folder), "--head", "subtype=categorical", "--max-epochs", "4", "--latent-dim", "2", "--quiet",
            "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "2"]
    assert main([*args, "--out", str(tmp_path / "m1")]) == 0
    assert (tmp_path / "ck" / "epoch-000003").is_dir()
    assert main([*args, "--resume", str(tmp_path / "ck"), "--out", str(tmp_path / "m2")]) == 0
    a, b = bf.FusionModel.load(tmp_path / "m1"), bf.FusionModel.load(tmp_path / "m2")
    assert all(torch.equal(a.module.state_dict()[k], b.module.state_dict()[k]) for k in a.module.state_dict())
    assert not a.interrupted_


def test_interrupted_flag_is_saved(cohort, monkeypatch, tmp_path):
    _interrupt_at(monkeypatch, 5)
    with pytest.warns(ConvergenceWarning):
        m = _model(cohort).fit(**FIT)
    m.save(tmp_path / "m")
    assert bf.FusionModel.load(tmp_path / "m").interrupted_
