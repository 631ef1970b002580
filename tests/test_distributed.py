"""Data-parallel training (gloo, 2 processes) equals one process on the same global batches."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bayesfuse.module.batch import TensorStore
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.heads import CategoricalHeadModule
from bayesfuse.train.distributed import train_distributed
from bayesfuse.train.svi import TrainConfig

STEPS = 6
CONFIG = TrainConfig(max_epochs=10, batch_size=24, lr=1e-2, kl_warmup_epochs=3, modality_dropout=0.3,
                     clip_norm=10.0, progress=False)


def _problem():
    """Module and cohort built deterministically (identical in every process); float64."""
    torch.manual_seed(0)
    dims = {"a": 6, "b": 4}
    module = FusionModule(dims, {"a": "gaussian", "b": "bernoulli"}, 3, {"y": CategoricalHeadModule(3, 3)},
                          hidden=8, encoder_dropout=0.0).double()
    n = 50
    x = {"a": torch.randn(n, 6, dtype=torch.float64), "b": torch.bernoulli(torch.full((n, 4), 0.4)).double()}
    presence = torch.bernoulli(torch.full((2, n), 0.8)).double()
    presence[0, presence.sum(0) == 0] = 1.0
    store = TensorStore(x, x, {m: torch.ones_like(v) for m, v in x.items()},
                        {m: torch.ones(n, dtype=torch.float64) for m in x}, presence,
                        {"y": {"y": torch.randint(0, 3, (n,))}})
    return module, store


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        module, store = _problem()
        if rank == 1:  # DDP must broadcast rank 0's initial parameters
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(1.0)
        train_distributed(module, store, CONFIG, seed=3, max_steps=STEPS)
        torch.save(module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_ranks_equal_one_process(tmp_path):
    module, store = _problem()
    init = {k: v.clone() for k, v in module.state_dict().items()}
    res = train_distributed(module, store, CONFIG, seed=3, max_steps=STEPS)
    assert res.extra["steps"] == STEPS
    single = module.state_dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    moved = max(float((single[k] - init[k]).abs().max()) for k in single)
    assert moved > 1e-2  # the parameters did change over the k steps
    for k in single:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0)  # ranks stay in lock-step
        # same global batches: equal up to float64 summation order of the all-reduce
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-9, atol=1e-10)


def test_rank_shards_without_allreduce_differ():
    """Negative control: one rank's shard alone (no gradient all-reduce) ends elsewhere."""
    module, store = _problem()
    train_distributed(module, store, CONFIG, seed=3, max_steps=STEPS)
    ref = module.state_dict()
    module2, store2 = _problem()
    half = store2.batch(torch.arange(0, store2.n, 2))
    half_store = TensorStore(half.encoder_input, half.observed, half.cell_mask, half.library, half.presence,
                             half.targets)
    train_distributed(module2, half_store, CONFIG, seed=3, max_steps=STEPS)
    diff = max(float((module2.state_dict()[k] - ref[k]).abs().max()) for k in ref)
    assert diff > 1e-3


def test_fit_distributed_runs_the_bayesian_post_fit_step(monkeypatch):
    """Review fix: fit_distributed skipped the head-weight refit and left ``diagnostics_`` of an
    earlier fit; it now runs the same post-fit step as ``FusionModel.fit``."""
    import warnings

    import bayesfuse as bf
    from bayesfuse.model.distributed import fit_distributed
    from bayesfuse.module import head_refit

    data, _ = bf.datasets.simulate(n_patients=60, latent_dim=2, n_origins=0, seed=0)
    calls = []
    real = head_refit.refit_module_heads
    monkeypatch.setattr(head_refit, "refit_module_heads",
                        lambda module, store, steps: calls.append((store.n, steps)) or real(module, store, steps))
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=8, bayesian="heads",
                           advanced=bf.AdvancedConfig(head_refit_steps=5), dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_distributed(model, max_epochs=1, batch_size=64, kl_warmup_epochs=1)
    assert calls == [(60, 5)]                       # refit on the whole training store, as configured
    assert model.diagnostics_ is not None

    plain = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=2, hidden=8)
    plain.diagnostics_ = model.diagnostics_          # stale value from an earlier (Bayesian) fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_distributed(plain, max_epochs=1, batch_size=64, kl_warmup_epochs=1)
    assert plain.diagnostics_ is None
