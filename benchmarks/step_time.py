"""Step time of bayesfuse's training step versus plain torch and NumPyro + jax.jit.

One model (2 Gaussian modalities, latent 32, a 5-class head, batch 256) as ``bayesfuse`` (``svi_step``),
``bayesfuse[trace]``, ``bayesfuse[compile]``, hand-written ``torch`` and ``numpyro`` under ``jax.jit``, losses
checked equal first; one pinned subprocess per thread count, timed round-robin (docs/benchmarks.md). Usage::

    python benchmarks/step_time.py --threads 1 2 --steps 300 --json step_time.json
"""

import argparse
import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, run_child, step_times, write_json  # noqa: E402

DIMS = {"a": 1000, "b": 500}
LATENT, HIDDEN, CLASSES, BATCH, N_COHORT, LR = 32, 256, 5, 256, 4096, 1e-3


def build_bayesfuse(torch, seed=0):
    from bayesfuse.module.batch import TensorStore
    from bayesfuse.module.fusion_module import FusionModule
    from bayesfuse.module.heads import CategoricalHeadModule

    torch.manual_seed(seed)
    module = FusionModule(DIMS, {m: "gaussian" for m in DIMS}, LATENT,
                          {"y": CategoricalHeadModule(LATENT, CLASSES)}, hidden=HIDDEN, encoder_dropout=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    x = {m: torch.randn(N_COHORT, f, generator=g) for m, f in DIMS.items()}
    y = torch.randint(0, CLASSES, (N_COHORT,), generator=g)
    store = TensorStore(encoder_input=x, observed=x, cell_mask={m: torch.ones(N_COHORT, f) for m, f in DIMS.items()},
                        library={m: torch.ones(N_COHORT) for m in DIMS}, presence=torch.ones(len(DIMS), N_COHORT),
                        targets={"y": {"y": y}})
    return module, store, x, y


def make_plain(torch, module):
    """Hand-written torch VAE with the same layers; weights copied from ``module``."""
    nn, F = torch.nn, torch.nn.functional

    def mlp(i, o, drop):
        layers = [nn.Linear(i, HIDDEN), nn.LayerNorm(HIDDEN), nn.GELU()] + ([nn.Dropout(drop)] if drop else [])
        return nn.Sequential(*layers, nn.Linear(HIDDEN, o))

    class PlainVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleDict({m: mlp(f, 2 * LATENT, 0.1) for m, f in DIMS.items()})
            self.dec = nn.ModuleDict({m: mlp(LATENT, f, 0) for m, f in DIMS.items()})
            self.raw_scale = nn.ParameterDict({m: nn.Parameter(torch.zeros(f)) for m, f in DIMS.items()})
            self.head = nn.Linear(LATENT, CLASSES)

        def loss(self, xs, y, n_total, eps=None):
            prec, wloc = 1.0, 0.0
            for m in DIMS:
                loc, raw = self.enc[m](xs[m]).split(LATENT, -1)
                p = 1.0 / (F.softplus(raw) + 1e-3) ** 2
                prec, wloc = prec + p, wloc + p * loc
            loc, scale = wloc / prec, prec.rsqrt()
            eps = torch.randn_like(loc) if eps is None else eps
            z = loc + eps * scale
            elbo = (0.5 * (eps ** 2 - z ** 2) + scale.log()).sum(-1)
            for m in DIMS:
                s = F.softplus(self.raw_scale[m] + 0.5413) + 1e-3
                elbo = elbo + (-0.5 * ((xs[m] - self.dec[m](z)) / s) ** 2 - s.log() - 0.9189385332046727).sum(-1)
            elbo = elbo + torch.log_softmax(self.head(z), -1).gather(-1, y[:, None]).squeeze(-1) * module.heads["y"].weight
            return -elbo.sum() * (n_total / y.shape[0])

    plain = PlainVAE()
    pairs = [(plain.head, module.heads["y"].net)] + [(plain.enc[m], module.encoders[m].net) for m in DIMS] + [
        (plain.dec[m], module.decoders[m].net) for m in DIMS]
    with torch.no_grad():
        for a, b in [ab for d, s in pairs for ab in zip(d.parameters(), s.parameters())]:
            a.copy_(b)
        for m in DIMS:
            plain.raw_scale[m].copy_(module.decoders[m].raw_scale)
    return plain


def make_numpyro(module, x, y):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import SVI, Trace_ELBO

    init = {k: jnp.asarray(v.detach().numpy()) for k, v in module.state_dict().items()}
    w = float(module.heads["y"].weight)

    def lin(pre, h):
        return h @ numpyro.param(f"{pre}.weight", init[f"{pre}.weight"]).T + numpyro.param(f"{pre}.bias", init[f"{pre}.bias"])

    def mlp(pre, h, key=None, has_dropout=False):
        h = lin(f"{pre}.0", h)
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        h = (h - mu) / jnp.sqrt(var + 1e-5) * numpyro.param(f"{pre}.1.weight", init[f"{pre}.1.weight"]) \
            + numpyro.param(f"{pre}.1.bias", init[f"{pre}.1.bias"])
        h = jax.nn.gelu(h, approximate=False)
        if key is not None:
            keep = jax.random.bernoulli(key, 0.9, h.shape)
            h = jnp.where(keep, h / 0.9, 0.0)
        return lin(f"{pre}.4" if has_dropout else f"{pre}.3", h)

    def model(xs, y, idx, n_total, dropout=True):
        xb = {m: v[idx] for m, v in xs.items()}
        yb = y[idx]
        with numpyro.plate("patients", idx.shape[0]), numpyro.handlers.scale(scale=n_total / idx.shape[0]):
            z = numpyro.sample("z", ndist.Normal(0.0, 1.0).expand([idx.shape[0], LATENT]).to_event(1))
            for m in DIMS:
                raw = numpyro.param(f"decoders.{m}.raw_scale", init[f"decoders.{m}.raw_scale"])
                s = jax.nn.softplus(raw + 0.5413) + 1e-3
                ll = (-0.5 * ((xb[m] - mlp(f"decoders.{m}.net", z)) / s) ** 2 - jnp.log(s) - 0.9189385332046727).sum(-1)
                numpyro.factor(f"x_{m}", ll)
            logp = jax.nn.log_softmax(lin("heads.y.net.0", z), -1)
            numpyro.factor("y", w * jnp.take_along_axis(logp, yb[:, None], -1)[:, 0])

    def guide(xs, y, idx, n_total, dropout=True):
        xb = {m: v[idx] for m, v in xs.items()}
        prec, wloc = 1.0, 0.0
        for m in DIMS:
            key = numpyro.prng_key() if dropout else None
            out = mlp(f"encoders.{m}.net", xb[m], key, has_dropout=True)
            loc, raw = out[:, :LATENT], out[:, LATENT:]
            p = 1.0 / (jax.nn.softplus(raw) + 1e-3) ** 2
            prec, wloc = prec + p, wloc + p * loc
        with numpyro.plate("patients", idx.shape[0]), numpyro.handlers.scale(scale=n_total / idx.shape[0]):
            numpyro.sample("z", ndist.Normal(wloc / prec, jax.lax.rsqrt(prec)).to_event(1))

    svi = SVI(model, guide, numpyro.optim.Adam(LR), Trace_ELBO())
    return svi, model, guide, {m: jnp.asarray(v.numpy()) for m, v in x.items()}, jnp.asarray(y.numpy())


def run_worker(threads: int, steps: int, block: int) -> dict:
    quiet(threads)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from numpyro.infer.util import log_density

    from bayesfuse.module.fused_elbo import fused_elbo_loss
    from bayesfuse.train.svi import TrainConfig, elbo_loss, make_loss_fn, make_optimizer, svi_step

    module, store, x, y = build_bayesfuse(torch)
    plain = make_plain(torch, module)
    svi, nmodel, nguide, xs, yj = make_numpyro(module, x, y)

    # ---- identical model: equal -ELBO at equal parameters and equal z (dropout off)
    module.eval()
    plain.eval()
    idx = torch.arange(BATCH)
    batch = store.batch(idx)
    eps = torch.randn(BATCH, LATENT, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        l_bf = float(fused_elbo_loss(module, batch, N_COHORT, eps=eps))
        l_pl = float(plain.loss({m: v[idx] for m, v in x.items()}, y[idx], N_COHORT, eps))
        loc, scale, _ = module.posterior(batch)
        z = jnp.asarray((loc + eps * scale).numpy())
        torch.manual_seed(3)
        l_tr = float(elbo_loss(module, batch, N_COHORT, method="trace"))
        torch.manual_seed(3)
        l_fu = float(elbo_loss(module, batch, N_COHORT, method="fused"))
    nargs = (xs, yj, jnp.arange(BATCH), N_COHORT, False)   # -ELBO at z: log q(z) - log p(x, y, z); no dropout
    l_np = float(log_density(nguide, nargs, {}, {"z": z})[0] - log_density(nmodel, nargs, {}, {"z": z})[0])
    check = {"bayesfuse_fused": l_bf, "plain_torch": l_pl, "numpyro": l_np,
             "pyro_trace_elbo_seed3": l_tr, "bayesfuse_fused_seed3": l_fu}
    rel = max(abs(l_pl - l_bf), abs(l_np - l_bf)) / abs(l_bf)
    rel_trace = abs(l_tr - l_fu) / abs(l_tr)
    if rel > 1e-4 or rel_trace > 1e-5:
        raise SystemExit(f"models differ: {check}")
    module.train()
    plain.train()

    # ---- steps
    cfg = TrainConfig(batch_size=BATCH, lr=LR)
    module_c, module_tr = copy.deepcopy(module), copy.deepcopy(module)
    from bayesfuse.train.svi import StepCompiler

    compiler = StepCompiler(module_c, store, TrainConfig(batch_size=BATCH, lr=LR, compile="always"), BATCH)
    compiler.start_epoch()   # compiles (forward + backward probe), timed
    loss_c = compiler.loss_fn(BATCH)
    if not compiler.info["used"]:
        raise SystemExit(f"compile failed: {compiler.info['reason']}")
    vals = []
    with torch.random.fork_rng():
        for f in (make_loss_fn(module_c, store, cfg), loss_c):   # eager vs compiled, same seed
            torch.manual_seed(5)
            vals.append(float(f(idx, 1.0)))
    rel_compile = abs(vals[1] - vals[0]) / abs(vals[0])
    if rel_compile > 1e-5:
        raise SystemExit(f"compiled loss differs from eager: {vals}")
    opt_pl, gen = torch.optim.Adam(plain.parameters(), lr=LR), torch.Generator().manual_seed(11)

    def bf_step(mod, config, loss_fn=None):
        opt, params = make_optimizer(mod, LR), list(mod.parameters())
        return lambda: svi_step(mod, opt, params, store, torch.randint(0, N_COHORT, (BATCH,), generator=gen),
                                1.0, config, loss_fn=loss_fn)

    def step_pl():
        i = torch.randint(0, N_COHORT, (BATCH,), generator=gen)
        loss = plain.loss({m: v.index_select(0, i) for m, v in x.items()}, y.index_select(0, i), N_COHORT) / N_COHORT
        opt_pl.zero_grad(set_to_none=True)
        loss.backward()
        opt_pl.step()

    nstate = [svi.init(jax.random.PRNGKey(0), xs, yj, jnp.arange(BATCH), N_COHORT)]
    update = jax.jit(svi.update, static_argnums=(4,))
    rng = np.random.default_rng(0)

    def step_np():
        nstate[0], loss = update(nstate[0], xs, yj, jnp.asarray(rng.integers(0, N_COHORT, BATCH)), N_COHORT)
        loss.block_until_ready()

    impls = {"bayesfuse": bf_step(module, cfg), "bayesfuse[compile]": bf_step(module_c, cfg, loss_c),
             "bayesfuse[trace]": bf_step(module_tr, TrainConfig(batch_size=BATCH, lr=LR, elbo="trace")),
             "torch": step_pl, "numpyro": step_np}
    times = {k: [] for k in impls}
    for f in impls.values():  # warm-up (jit compile, allocator)
        step_times(f, 0, warmup=20)
    while min(len(v) for v in times.values()) < steps:
        for k, f in impls.items():
            times[k] += step_times(f, block)
    med = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    return {"threads": threads, "steps": steps, "median_ms": med,
            "ratio_vs_torch": {k: v / med["torch"] for k, v in med.items()},
            "ratio_vs_numpyro": {k: v / med["numpyro"] for k, v in med.items()},
            "loss_check": check, "loss_check_max_rel_diff": rel, "trace_vs_fused_rel_diff": rel_trace,
            "compile_seconds": compiler.info["compile_seconds"], "compiled_vs_eager_rel_diff": rel_compile,
            "loadavg_before": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per implementation (>= 200)")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="independent processes per thread count")
    ap.add_argument("--omp-wait-policy", default="default", choices=("PASSIVE", "ACTIVE", "default"),
                    help="OMP_WAIT_POLICY of the workers (PASSIVE: for a loaded machine; docs/benchmarks.md)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        # XLA:CPU ignores intra_op_parallelism_threads: pin every implementation to the same `t` cores
        if hasattr(os, "sched_setaffinity") and args.worker < (os.cpu_count() or 1):
            os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.worker]))
        print(json.dumps(run_worker(args.worker, args.steps, args.block)))
        return
    results = []
    for t in args.threads:
        for r in range(args.repeats):
            env = dict(os.environ, XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if t > 1 else 'false'} "
                       f"intra_op_parallelism_threads={t}", OMP_NUM_THREADS=str(t), JAX_PLATFORMS="cpu")
            if args.omp_wait_policy != "default":
                env["OMP_WAIT_POLICY"] = args.omp_wait_policy
            load = os.getloadavg()
            res, proc = run_child(__file__, "--worker", t, "--steps", args.steps, "--block", args.block,
                                  env=env)
            if res is None:
                raise SystemExit(proc.stderr)
            res["repeat"], res["loadavg_1min"], res["omp_wait_policy"] = r, load[0], args.omp_wait_policy
            results.append(res)
    print(f"{'threads':>7} {'rep':>3} {'load':>5} | " + " ".join(f"{k:>16}" for k in results[0]["median_ms"])
          + " | bf/numpyro compiled/numpyro bf/torch compile s")
    for res in results:
        med, rt, rn = res["median_ms"], res["ratio_vs_torch"], res["ratio_vs_numpyro"]
        print(f"{res['threads']:>7} {res['repeat']:>3} {res['loadavg_1min']:>5.1f} | "
              + " ".join(f"{v:>13.2f} ms" for v in med.values())
              + f" | {rn['bayesfuse']:>10.2f} {rn['bayesfuse[compile]']:>17.2f} {rt['bayesfuse']:>8.2f} "
              f"{res['compile_seconds']:>9.1f}")
    print(f"loss check (max rel diff bayesfuse vs torch / numpyro at equal params and z): "
          f"{max(r['loss_check_max_rel_diff'] for r in results):.1e}; fused vs Pyro Trace_ELBO (same seed): "
          f"{max(r['trace_vs_fused_rel_diff'] for r in results):.1e}; compiled vs eager (same seed): "
          f"{max(r['compiled_vs_eager_rel_diff'] for r in results):.1e}")
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
