"""CUDA tests (opt in: ``pytest -m gpu``; benchmarks/gpu_check.py runs them). Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bayesfuse as bf

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cohort(n=1500, seed=4):
    mods = {"a": ("gaussian", 40), "b": ("gaussian", 30), "c": ("bernoulli", 20)}
    return bf.datasets.simulate(n_patients=n, modalities=mods, missing_rate=0.2, class_separation=3.0, seed=seed)[0]


def _metrics(model, test):
    post = model.predict(test, num_samples=100, seed=0)
    p = post.mean_probs("subtype").to_numpy()
    code = {str(c): i for i, c in enumerate(post.classes("subtype"))}
    y = np.array([code[str(v)] for v in test.targets["subtype"]])
    return float((p.argmax(1) == y).mean()), float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def test_fit_predict_places_everything_on_cuda():
    data = _cohort(400)
    model = bf.FusionModel(data.subset(split="train"), heads={"subtype": "categorical"}, latent_dim=4, hidden=32,
                           device="cuda")
    model.fit(max_epochs=4, kl_warmup_epochs=1, progress=False, seed=0)
    assert all(p.device.type == "cuda" for p in model.module.parameters())
    store = model._store(data.subset(split="test"), strict_targets=False)
    tensors = [*store.encoder_input.values(), *store.observed.values(), *store.cell_mask.values(), store.presence]
    assert all(t.device.type == "cuda" for t in tensors)
    post = model.predict(data.subset(split="test"), num_samples=8, seed=0)
    probs = post.probs("subtype")
    assert isinstance(probs, np.ndarray) and probs.shape[:2] == (8, data.subset(split="test").n_samples)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.isfinite(model.history_["train_loss"]).all()


def test_training_step_does_not_sync_with_the_host():
    from bayesfuse.train.svi import TrainConfig, make_optimizer, svi_step

    data = _cohort(400)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=4, hidden=32, device="cuda")
    store = model._store(data, strict_targets=True)
    module = model._build_module().train()
    cfg = TrainConfig(batch_size=64)
    optim, params = make_optimizer(module, cfg.lr), list(module.parameters())
    idx = [torch.randperm(store.n, device="cuda")[:64] for _ in range(4)]
    flags: list[torch.Tensor] = []
    svi_step(module, optim, params, store, idx[0], 0.5, cfg, flags)   # warm-up (allocator, lazy init)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")   # any synchronising call (.item(), nonzero, ...) raises
    try:
        losses = [svi_step(module, optim, params, store, i, 0.5, cfg, flags) for i in idx[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(loss.device.type == "cuda" for loss in losses)
    assert torch.isfinite(torch.stack(losses)).all() and float(torch.stack(flags).sum()) == 0.0


def test_cpu_and_cuda_fits_agree_in_distribution():
    data = _cohort()
    train, test = data.subset(split="train"), data.subset(split="test")
    res = {}
    for device in ("cpu", "cuda"):
        model = bf.FusionModel(train, heads={"subtype": "categorical"}, latent_dim=4, hidden=32, device=device)
        model.fit(max_epochs=40, kl_warmup_epochs=10, progress=False, seed=0)
        res[device] = _metrics(model, test)
    (acc_cpu, nll_cpu), (acc_gpu, nll_gpu) = res["cpu"], res["cuda"]
    assert acc_cpu > 0.6   # the fits learnt something (chance is 1/3)
    assert abs(acc_cpu - acc_gpu) <= 0.05, res   # different RNG streams: same distribution, not the same draws
    assert abs(nll_cpu - nll_gpu) <= 0.15, res


def test_compiled_step_equals_eager_step_on_cuda():
    from bayesfuse.train.svi import TrainConfig, make_loss_fn

    data = _cohort(200)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=3, hidden=16, device="cuda",
                           dtype="float64")
    store = model._store(data, strict_targets=True)
    module = model._build_module().train()
    cfg = TrainConfig(modality_dropout=0.4)
    idx = torch.arange(0, 64, device="cuda")
    out = []
    for compiled in (False, True):
        fn = make_loss_fn(module, store, cfg, compiled=compiled)
        module.zero_grad()
        torch.manual_seed(11)
        loss = fn(idx, 0.5)
        loss.backward()
        out.append((loss.detach(), torch.cat([p.grad.reshape(-1) for p in module.parameters() if p.grad is not None])))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-8, atol=1e-10)
