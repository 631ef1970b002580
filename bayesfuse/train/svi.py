"""SVI runner for :class:`bayesfuse.module.FusionModule`.

The loss is the ELBO of the module's Pyro model and guide. By default (``elbo="fused"``) it
is evaluated by :func:`bayesfuse.module.fused_elbo.fused_elbo_loss`, one vectorised torch
computation of the same estimator as Pyro's ``Trace_ELBO`` (equal at equal parameters and
noise, ``tests/test_perf.py``); ``elbo="trace"`` uses ``Trace_ELBO.differentiable_loss``
itself. A torch optimizer runs over the module's own parameters (no global param store).

Hot path: data stay on the device, minibatches are index_select'ed from device tensors,
Adam and gradient clipping are the fused / foreach kernels (one call over all parameters),
and the loss is read back to the host once per epoch (no per-step ``.item()``).

``TrainConfig.compile`` (``fit(compile=...)``): the minibatch loss (gather, modality-dropout
mask, fused ELBO) and its backward can run as one ``torch.compile``'d graph
(:class:`StepCompiler`). Random draws stay the eager ones (``fallback_random``), so a compiled
step equals the eager step at the same seed up to float rounding (``tests/test_perf.py``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyro
import torch
from pyro.infer import Trace_ELBO

from bayesfuse.exceptions import ConvergenceError, ConvergenceWarning
from bayesfuse.module.batch import TensorStore
from bayesfuse.module.fused_elbo import fused_elbo_loss, has_global_head_sites
from bayesfuse.module.fusion_module import FusionModule, fused_supported
from bayesfuse.train.faults import (
    Epochs,
    FaultPolicy,
    GoodState,
    InterruptGuard,
    apply_fault_flag,
    diagnose,
    step_fault,
)
from bayesfuse.train.progress import EpochProgress

__all__ = ["TrainConfig", "TrainResult", "Checkpointing", "train_svi", "elbo_loss", "make_optimizer", "clip_gradients",
           "svi_step", "validation_loss", "validation_head_nll", "MONITORS", "COMPILE_MODES", "StepCompiler",
           "make_loss_fn", "compile_supported"]

#: Early-stopping criteria of :func:`train_svi` (``TrainConfig.monitor``).
MONITORS = ("elbo", "heads")
#: ``TrainConfig.compile`` / ``fit(compile=...)`` values (True = "always", False = "never").
COMPILE_MODES = ("auto", "always", "never")
#: compile="auto" compiles when, after two eager epochs, the rest of the fit (at ``max_epochs``) would take at
#: least this long eagerly: ~10x the measured compile cost (14-35 s on the 2-core CPU) over the measured gain
#: (10-20% of a step), with a margin of 2 for early stopping (docs/benchmarks.md, section 1).
AUTO_COMPILE_MIN_SECONDS = 300.0
#: compile="auto" returns to eager unless a compiled epoch is at least this much faster than an eager one.
AUTO_COMPILE_MIN_GAIN = 0.03


@dataclass
class TrainConfig:
    """Optimisation settings (see :meth:`bayesfuse.FusionModel.fit`)."""

    max_epochs: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    kl_warmup_epochs: int = 30
    patience: int = 30
    min_epochs: int = 40
    num_particles: int = 1
    modality_dropout: float = 0.25
    modality_dropout_mode: str = "both"
    clip_norm: float = 10.0
    progress: bool = True
    elbo: str = "fused"
    monitor: str = "elbo"
    compile: str = "auto"


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def elbo_loss(module: FusionModule, batch, n_total: int, kl_scale: float = 1.0, num_particles: int = 1,
              modality_mask: torch.Tensor | None = None, method: str = "trace", hide_from: str = "both"
              ) -> torch.Tensor:
    """Negative ELBO of ``batch`` scaled to the full cohort of ``n_total`` patients (a tensor).

    ``method="trace"``: Pyro ``Trace_ELBO.differentiable_loss`` of ``module.model``/``module.guide``.
    ``method="fused"``: :func:`~bayesfuse.module.fused_elbo.fused_elbo_loss`, the same estimator in
    one vectorised pass (falls back to ``"trace"`` for several particles with Bayesian head weights
    and for modules whose model/guide it does not cover, see ``fused_supported``).
    ``hide_from``: where ``modality_mask`` hides modalities (see :meth:`FusionModule.model`).
    """
    if method not in ("trace", "fused"):
        raise ValueError(f"elbo={method!r} is not supported; use 'fused' (default, fast) or 'trace' (Pyro).")
    if method == "fused" and fused_supported(module) and (num_particles == 1 or not has_global_head_sites(module)):
        return fused_elbo_loss(module, batch, n_total, kl_scale, num_particles, modality_mask, hide_from=hide_from)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=False)
    return elbo.differentiable_loss(module.model, module.guide, batch, n_total, kl_scale, modality_mask,
                                    hide_from)


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over all parameters as one fused kernel (CPU and CUDA; foreach where fused is unavailable)."""
    params = list(module.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` with the foreach kernels; no host sync (the clip factor stays on the device).

    Returns the total gradient norm before clipping (a device tensor; ``max_norm=inf`` only measures it).
    """
    try:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    except RuntimeError:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def svi_step(module: FusionModule, optim: torch.optim.Optimizer, params: list[torch.Tensor], train: TensorStore,
             idx: torch.Tensor, kl_scale: float, config: TrainConfig, faults: list | None = None,
             loss_fn=None) -> torch.Tensor:
    """One optimisation step on the patients ``idx`` (LongTensor (B,) on the device) of ``train``.

    ``loss_fn``: ``(idx, kl_scale) -> loss`` to use instead of the eager loss (e.g. the compiled
    :func:`make_loss_fn`).

    A non-finite loss or gradient norm skips the update on the device (fused Adam's
    ``found_inf``, :mod:`bayesfuse.train.faults`; no host sync), so the parameters keep their
    last good values; the step's 0/1 fault flag is appended to ``faults`` when given.
    Returns the detached loss (negative ELBO per patient, a 0-d device tensor; not synced).
    """
    loss = (loss_fn or make_loss_fn(module, train, config))(idx, kl_scale)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_gradients(params, config.clip_norm if config.clip_norm else math.inf)
    flag = step_fault(loss, grad_norm)
    if apply_fault_flag(optim, flag) or not bool(flag):   # without fused Adam: one sync to skip the step
        optim.step()
    if faults is not None:
        faults.append(flag)
    return loss.detach()


def make_loss_fn(module: FusionModule, train: TensorStore, config: TrainConfig, compiled: bool = False):
    """The step's loss ``(idx, kl_scale) -> Tensor ()``: gather, modality-dropout mask, ELBO per patient.

    ``compiled=True``: the same function under ``torch.compile`` (one graph, forward and backward;
    ``fallback_random`` keeps the eager random draws, so it consumes the RNG stream exactly as the
    eager one). Compilation happens at the first call, for minibatches of that call's size; the
    KL weight enters as a 0-d tensor (cached per value), so warm-up does not recompile.
    """
    n = train.n

    def loss(idx, kl_scale):
        batch = train.batch(idx)
        mmask = module.random_modality_mask(batch.presence, config.modality_dropout)
        return elbo_loss(module, batch, n, kl_scale, config.num_particles, mmask, config.elbo,
                         config.modality_dropout_mode) / n

    if not compiled:
        return loss
    fn = torch.compile(loss, fullgraph=True, dynamic=False, options={"fallback_random": True})
    kl_cache: dict[float, torch.Tensor] = {}

    def compiled_loss(idx, kl_scale):
        kl = kl_cache.get(kl_scale)
        if kl is None:   # one small host-to-device copy per KL value (per epoch), not per step
            kl_cache.clear()
            kl = kl_cache[kl_scale] = torch.tensor(kl_scale, dtype=train.presence.dtype, device=idx.device)
        return fn(idx, kl)

    return compiled_loss


def compile_supported(module: FusionModule, config: TrainConfig) -> bool:
    """True when the step can be compiled: the fused ELBO of a plain :class:`FusionModule` without Pyro sites.

    Heads with global sample sites (survival, Bayesian heads), Bayesian modules and ``elbo="trace"`` run
    Pyro code in the step and stay eager.
    """
    cls = type(module)
    return (config.elbo == "fused" and cls.model is FusionModule.model and cls.guide is FusionModule.guide
            and getattr(module, "weight_kl", None) is None and not has_global_head_sites(module))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepCompiler:
    """Chooses the eager or the compiled step loss during :func:`train_svi` (``TrainConfig.compile``).

    * ``"never"``: eager throughout.
    * ``"always"``: compile before the first step.
    * ``"auto"``: two eager epochs; compile if the rest of the fit at ``max_epochs`` would take at least
      :data:`AUTO_COMPILE_MIN_SECONDS` eagerly; after one compiled epoch keep it only if that epoch was at
      least :data:`AUTO_COMPILE_MIN_GAIN` faster than the faster eager epoch, else return to eager.

    Compilation is a probe step (forward and backward on the first ``B`` patients) under
    ``torch.random.fork_rng``, so it consumes no random draws and its cost (``info["compile_seconds"]``)
    is measured apart from the epochs. A compile that fails (no C++ compiler, an unsupported op) falls
    back to eager (``info["reason"]``; a warning with ``"always"``). Only full minibatches use the
    compiled graph (the last, smaller one of an epoch stays eager: no recompilation).
    ``info`` (``TrainResult.extra["compile"]``, ``FusionModel.fit_compile_``) records the decision and
    the measured times.
    """

    def __init__(self, module: FusionModule, train: TensorStore, config: TrainConfig, batch_size: int):
        mode = {True: "always", False: "never"}.get(config.compile, config.compile)
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile={config.compile!r} is not supported; use 'auto', 'always' (True) or "
                             "'never' (False).")
        self.module, self.train, self.config, self.bs = module, train, config, batch_size
        self.eager = make_loss_fn(module, train, config)
        self.compiled = None
        self.epoch_seconds: list[float] = []
        supported = compile_supported(module, config)
        self.state = "eager" if mode == "never" or not supported else ("compile" if mode == "always" else "measure")
        self.info = {"mode": mode, "used": False, "compile_seconds": None, "eager_epoch_seconds": None,
                     "compiled_epoch_seconds": None,
                     "reason": "compile='never'" if mode == "never" else
                     (None if supported else "not supported for this model (Pyro sites in the step or elbo='trace')")}

    def loss_fn(self, batch_size: int):
        """The loss to use for a minibatch of ``batch_size`` patients."""
        return self.compiled if self.compiled is not None and batch_size == self.bs else self.eager

    def start_epoch(self) -> None:
        if self.state == "compile":
            self._compile()

    def end_epoch(self, seconds: float, epochs_left: int) -> None:
        """Record the training time of the epoch just run (host-synced) and decide (``"auto"``)."""
        if self.state == "measure":
            self.epoch_seconds.append(seconds)
            if len(self.epoch_seconds) >= 2:
                eager = min(self.epoch_seconds)
                self.info["eager_epoch_seconds"] = eager
                if eager * epochs_left >= AUTO_COMPILE_MIN_SECONDS:
                    self.state = "compile"
                else:
                    self.state = "eager"
                    self.info["reason"] = (f"auto: the rest of the fit would take ~{eager * epochs_left:.0f} s eagerly "
                                           f"(< {AUTO_COMPILE_MIN_SECONDS:.0f} s), too little to amortise compiling")
        elif self.state == "trial":
            self.info["compiled_epoch_seconds"] = seconds
            eager = self.info["eager_epoch_seconds"]
            if seconds > eager * (1 - AUTO_COMPILE_MIN_GAIN):
                self.compiled, self.state, self.info["used"] = None, "eager", False
                self.info["reason"] = (f"auto: a compiled epoch took {seconds:.3g} s vs {eager:.3g} s eager "
                                       f"(less than {100 * AUTO_COMPILE_MIN_GAIN:.0f}% faster); back to eager")
            else:
                self.state = "compiled"
                self.info["reason"] = f"auto: compiled epoch {seconds:.3g} s vs {eager:.3g} s eager"

    def _compile(self) -> None:
        dev = self.train.presence.device
        mode = self.info["mode"]
        try:
            fn = make_loss_fn(self.module, self.train, self.config, compiled=True)
            idx = torch.arange(self.bs, device=dev)
            t = time.perf_counter()
            with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                fn(idx, 1.0).backward()
            _sync(dev)
            self.info["compile_seconds"] = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eagerly
            self.compiled, self.state = None, "eager"
            self.info["reason"] = f"compile failed ({type(exc).__name__}: {str(exc).strip()[:300]}); eager"
            if mode == "always":
                warnings.warn(f"torch.compile of the training step failed ({type(exc).__name__}); training "
                              "eagerly instead (same results, slower). Pass compile='never' to skip the attempt.",
                              RuntimeWarning, stacklevel=4)
            return
        finally:
            self.module.zero_grad(set_to_none=True)
        self.compiled, self.info["used"] = fn, True
        self.state = "trial" if mode == "auto" else "compiled"


def validation_loss(module: FusionModule, store: TensorStore, chunk: int = 1024, method: str = "fused"
                    ) -> torch.Tensor:
    """Negative ELBO per patient of a whole cohort, in chunks of ``chunk`` patients (bounded memory)."""
    total = torch.zeros((), dtype=store.presence.dtype, device=store.presence.device)
    for start in range(0, store.n, chunk):
        idx = torch.arange(start, min(store.n, start + chunk), device=store.presence.device)
        total = total + elbo_loss(module, store.batch(idx), store.n, 1.0, 1, None, method) * (idx.numel() / store.n)
    return total / store.n


def validation_head_nll(module: FusionModule, store: TensorStore, chunk: int = 1024, num_samples: int = 8,
                        seed: int = 0) -> torch.Tensor:
    """Posterior-predictive negative log-likelihood of the heads' targets, nats per patient.

    For every patient ``n`` and head ``h`` with a known target:
    ``-log (1/S) sum_s p(y_nh | z_s, theta_s)``, with ``z_s ~ q(z | x_n)`` (all present modalities)
    and ``theta_s`` from the head's guide (point heads: their weights), summed over heads and
    averaged over the store's patients. The ``S`` draws come from a private RNG seeded by ``seed``
    (the global stream is left alone), so the criterion changes between epochs only through the
    parameters (common random numbers), not through Monte-Carlo noise.

    Parameters
    ----------
    store : TensorStore
        ``N`` validation patients.
    num_samples : int
        ``S`` posterior draws per patient.

    Returns
    -------
    Tensor, shape ()
    """
    dev = store.presence.device
    total = torch.zeros((), dtype=store.presence.dtype, device=dev)
    log_s = math.log(num_samples)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        params = {h: head.draw_params(num_samples) for h, head in module.heads.items()}
        for start in range(0, store.n, chunk):
            idx = torch.arange(start, min(store.n, start + chunk), device=dev)
            batch = store.batch(idx)
            loc, scale, _ = module.posterior(batch, None)
            z = loc + torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=dev) * scale  # (S, B, D)
            for h, head in module.heads.items():
                ll = head.log_likelihood(z, module.head_target(h, batch, z), params[h])   # (S, B)
                total = total - (torch.logsumexp(ll, dim=0) - log_s).sum()
    return total / store.n


@dataclass
class Checkpointing:
    """Checkpoint settings of :func:`train_svi` (see :mod:`bayesfuse.train.checkpoint`).

    ``directory``/``every``: write a checkpoint there after every ``every``-th epoch (0 = never);
    ``resume``: a checkpoint (folder) to continue from; ``settings``: what the fingerprint covers
    (training arguments), so a checkpoint is only resumed into the same fit.
    """

    directory: str | None = None
    every: int = 0
    resume: str | None = None
    settings: dict = field(default_factory=dict)


def _best_loss(v):
    return math.inf if v is None else float(v)


def _convergence_error(module, store, kl_scale, epoch, retries, lr, what) -> ConvergenceError:
    """The error after the last retry, naming the non-finite terms (evaluated once, now)."""
    try:
        causes = diagnose(module, store, kl_scale, training=what != "validation loss")
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never hide the original problem
        causes = [f"(diagnosis failed: {type(exc).__name__}: {exc})"]
    cause = ("; ".join(causes) if causes else
             "every term is finite at the current parameters, so the fault came from the step size or a random draw")
    return ConvergenceError(
        f"Training diverged (non-finite {what}) at epoch {epoch} and did not recover after {retries} retries from "
        f"the last good state with the learning rate lowered to {lr:.3g}. Likely cause: {cause}. Lower lr=, "
        "standardise or log-transform that modality (check it for extreme values or inf), or lower the head's "
        "weight=; fit(max_retries=...) allows more retries.")


def train_svi(module: FusionModule, train: TensorStore, val: TensorStore | None, config: TrainConfig,
              generator: torch.Generator, checkpointing: Checkpointing | None = None,
              faults: FaultPolicy | None = None) -> TrainResult:
    """Fit ``module`` by SVI on ``train``; early-stop on a validation criterion of ``val``.

    ``config.monitor``: ``"elbo"`` = the negative ELBO of ``val``; ``"heads"`` = the heads'
    posterior-predictive NLL on ``val`` (:func:`validation_head_nll`).

    Returns the per-epoch history (``train_loss`` and ``val_loss`` in nats per patient,
    ``kl_scale``, ``seconds``) and restores the parameters of the best validation epoch.

    Faults: a step with a non-finite loss or gradient is not applied (no host sync,
    :mod:`bayesfuse.train.faults`); an epoch that had one is rerun from the state it started in
    with the learning rate times ``faults.lr_factor``, at most ``faults.max_retries`` times over
    the fit, then :class:`ConvergenceError` names the non-finite term. ``KeyboardInterrupt``
    stops the loop, keeps the best-so-far parameters and sets ``extra["interrupted"]``.
    ``checkpointing``: periodic atomic checkpoints and resuming (bit-identical on the CPU).
    """
    from bayesfuse.train import checkpoint as ckpt  # noqa: PLC0415

    device = train.presence.device
    n = train.n
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, math.ceil(n / bs))
    optim = make_optimizer(module, config.lr, config.weight_decay)
    params = [p for p in module.parameters() if p.requires_grad]
    policy = faults or FaultPolicy()
    rows = []
    best = (math.inf, -1, None)
    stalled = 0
    retries, fault_log, start, elapsed = 0, [], 0, 0.0
    if checkpointing is not None and checkpointing.resume is not None:
        st = ckpt.load_checkpoint(checkpointing.resume, module, optim, generator, checkpointing.settings)
        loop = st["loop"]
        rows, stalled, retries, fault_log = loop["rows"], loop["stalled"], loop["retries"], loop["faults"]
        best = (_best_loss(loop["best_loss"]), loop["best_epoch"], st["best_state"])
        start, elapsed = st["epoch"] + 1, float(loop["seconds"])
    good = GoodState(module, optim)
    compiler = StepCompiler(module, train, config, bs)
    guard = InterruptGuard()
    epochs = Epochs(start, config.max_epochs)
    t0 = time.perf_counter() - elapsed
    bar = EpochProgress(config.max_epochs) if config.progress else None
    stopped_early = False
    with pyro.validation_enabled(False), guard:
        for epoch in epochs:
            good.save()
            module.train()
            kl_scale = min(1.0, (epoch + 1) / config.kl_warmup_epochs) if config.kl_warmup_epochs > 0 else 1.0
            compiler.start_epoch()
            t_epoch = time.perf_counter()
            perm = torch.randperm(n, generator=generator).to(device)
            total = torch.zeros((), dtype=train.presence.dtype, device=device)
            flags: list[torch.Tensor] = []
            for s in range(steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs]
                total = total + svi_step(module, optim, params, train, idx, kl_scale, config, flags,
                                         compiler.loss_fn(idx.numel()))
            # one host read per epoch: the loss sum and the number of faulty (skipped) steps
            total, n_faults = torch.stack([total.double(), torch.stack(flags).sum().double()]).tolist()
            compiler.end_epoch(time.perf_counter() - t_epoch, config.max_epochs - epoch - 1)
            train_loss = total / steps_per_epoch
            val_loss = math.nan
            if val is not None and val.n > 0:
                module.eval()
                with torch.no_grad():
                    if config.monitor == "heads":
                        val_loss = float(validation_head_nll(module, val, max(bs, 1024)))
                    else:
                        val_loss = float(validation_loss(module, val, max(bs, 1024), config.elbo))
            rows.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "kl_scale": kl_scale,
                         "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.update(train_loss, val_loss)
            val_bad = val is not None and val.n > 0 and not math.isfinite(val_loss)
            if n_faults or not math.isfinite(train_loss) or val_bad:
                rows.pop()
                lr = optim.param_groups[0]["lr"]
                what = "validation loss" if val_bad and not n_faults else "loss or gradient"
                if retries >= policy.max_retries:
                    raise _convergence_error(module, val if val_bad and not n_faults else train, kl_scale, epoch,
                                             retries, lr, what)
                retries += 1
                good.restore()
                for g in optim.param_groups:
                    g["lr"] = g["lr"] * policy.lr_factor
                fault_log.append({"epoch": epoch, "faulty_steps": int(n_faults), "lr": lr * policy.lr_factor})
                where = f"in {int(n_faults)} step(s) of epoch {epoch}" if n_faults else f"at epoch {epoch}"
                warnings.warn(f"Non-finite {what} {where}; rerunning the epoch "
                              f"from its start with lr={lr * policy.lr_factor:.3g} (retry {retries} of "
                              f"{policy.max_retries}).", ConvergenceWarning, stacklevel=3)
                epochs.repeat()
                continue
            monitor = val_loss if math.isfinite(val_loss) else train_loss
            # Only compare after warm-up: the loss changes meaning while the KL weight ramps.
            if kl_scale >= 1.0:
                if monitor < best[0] - 1e-4 * abs(best[0]) if math.isfinite(best[0]) else True:
                    best = (monitor, epoch, copy.deepcopy(module.state_dict()))
                    stalled = 0
                else:
                    stalled += 1
                if epoch + 1 >= config.min_epochs and stalled >= config.patience and val is not None:
                    stopped_early = True
                    break
            if checkpointing is not None and checkpointing.every and (epoch + 1) % checkpointing.every == 0 \
                    and checkpointing.directory is not None:
                loop = {"rows": rows, "stalled": stalled, "retries": retries, "faults": fault_log,
                        "best_loss": best[0] if math.isfinite(best[0]) else None, "best_epoch": best[1],
                        "seconds": time.perf_counter() - t0}
                ckpt.save_checkpoint(checkpointing.directory, epoch, module, optim, generator, loop, best[2],
                                     checkpointing.settings)
    if bar is not None:
        bar.close(best[1], stopped_early)
    if guard.interrupted:
        if not rows:
            raise KeyboardInterrupt
        if best[2] is None:
            good.restore()   # mid-epoch parameters: back to the end of the last complete epoch
        where = f"the best parameters so far (epoch {best[1]})" if best[2] is not None else \
            f"the parameters of the last complete epoch ({rows[-1]['epoch']}; the KL warm-up had not ended)"
        warnings.warn(f"Training interrupted (KeyboardInterrupt) after {len(rows)} epoch(s); the model keeps "
                      f"{where} and is usable (interrupted_ is True). Continue with fit(resume=checkpoint_dir) "
                      "when checkpoints were written.", ConvergenceWarning, stacklevel=3)
    if best[2] is not None:
        module.load_state_dict(best[2])
    module.eval()
    return TrainResult(history=pd.DataFrame(rows), best_epoch=best[1], stopped_early=stopped_early or guard.interrupted,
                       seconds=time.perf_counter() - t0,
                       extra={"interrupted": guard.interrupted, "retries": retries, "faults": fault_log,
                              "compile": compiler.info})
