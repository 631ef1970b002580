"""Training faults: detecting a non-finite step without a host sync, and naming its cause.

Detection (hot path, no ``.item()``): :func:`step_fault` turns the step's loss and the total
gradient norm (returned by the clipping call that runs anyway) into a 0-d device flag. The fused
Adam kernel reads that flag as ``found_inf`` (the mechanism ``torch.amp.GradScaler`` uses) and
leaves parameters, moments and step counters untouched on a faulty step, so a non-finite loss or
gradient never reaches the parameters: the last good state is kept within the same step. The
training loop reads the accumulated flag with the epoch's loss (one read per epoch, already
there) and decides what to do (:mod:`bayesfuse.train.svi`: lower the learning rate and rerun the
epoch, a bounded number of times).

Diagnosis (once, at failure time): :func:`diagnose` evaluates every term of the ELBO separately
(each modality's expert and reconstruction, each head, the KL) and the gradient of each
modality's / head's parameters on the training cohort, and names the first non-finite one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesfuse.exceptions import ArgumentError
from bayesfuse.module.batch import TensorStore

__all__ = ["FaultPolicy", "step_fault", "apply_fault_flag", "diagnose", "GoodState", "InterruptGuard", "Epochs"]


@dataclass
class FaultPolicy:
    """What the SVI loop does when an epoch had a non-finite loss or gradient.

    Parameters
    ----------
    max_retries : int
        Faulty epochs tolerated over the whole fit; each one is rerun from the last good state
        with the learning rate multiplied by ``lr_factor``. One more raises
        :class:`~bayesfuse.exceptions.ConvergenceError`.
    lr_factor : float
        Learning-rate multiplier per retry (in (0, 1)).
    """

    max_retries: int = 3
    lr_factor: float = 0.3

    def __post_init__(self):
        if int(self.max_retries) < 0 or not 0 < float(self.lr_factor) < 1:
            raise ArgumentError(f"max_retries={self.max_retries} must be >= 0 and lr_factor={self.lr_factor} in (0, 1).")


def step_fault(loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
    """0-d float32 device tensor: 1 when ``loss`` or ``grad_norm`` is not finite, else 0 (no sync)."""
    bad = ~torch.isfinite(loss.detach())
    if grad_norm is not None:
        bad = bad | ~torch.isfinite(grad_norm.detach())
    return bad.reshape(()).to(torch.float32)


def apply_fault_flag(optim: torch.optim.Optimizer, flag: torch.Tensor) -> bool:
    """Hand ``flag`` to ``optim`` so that its next ``step()`` is skipped when the flag is 1.

    Returns True when the optimizer honours it on the device (fused Adam: ``found_inf``); False
    means the caller must skip the step itself (one host sync; only for optimizers without it).
    """
    if getattr(optim, "_step_supports_amp_scaling", False) and optim.defaults.get("fused"):
        optim.found_inf = flag.to(device=next(iter(optim.param_groups[0]["params"])).device)
        return True
    return False


def _describe(name: str, value: torch.Tensor) -> str | None:
    v = value.detach()
    if bool(torch.isfinite(v).all()):
        return None
    kind = "NaN" if bool(torch.isnan(v).any()) else "infinite"
    return f"{name} is {kind}"


def _named_groups(module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Parameters grouped by what they belong to: ``modality 'x' encoder``, ``head 'y'``, ..."""
    groups: dict[str, list] = {}
    for name, p in module.named_parameters():
        parts = name.split(".")
        if parts[0] in ("encoders", "decoders") and len(parts) > 1:
            key = f"modality {parts[1]!r} {parts[0][:-1]}"
        elif parts[0] == "heads" and len(parts) > 1:
            key = f"head {parts[1]!r}"
        else:
            key = f"parameter {parts[0]!r}"
        groups.setdefault(key, []).append((name, p))
    return groups


def diagnose(module, store: TensorStore, kl_scale: float = 1.0, chunk: int = 512, training: bool = True
             ) -> list[str]:
    """Names of the ELBO terms / parameter groups that are non-finite on ``store`` (at most a few).

    Checks, in order: the parameters themselves, each modality's encoder input and expert, the
    fused posterior, each modality's reconstruction log-likelihood, each head's log-likelihood,
    the KL term, then (one backward pass) each modality's / head's gradient. Each entry says what
    was non-finite; an empty list means everything evaluated finite at the current parameters
    (the fault was transient or came from a random draw). ``training``: evaluate in training mode
    (dropout on, as in the faulty step) or in eval mode (as the validation loss).
    """
    from bayesfuse.module.fused_elbo import _head_global_terms  # noqa: PLC0415
    from bayesfuse.nn.decoders import decoder_log_likelihood  # noqa: PLC0415

    found: list[str] = []
    groups = _named_groups(module)
    for key, plist in groups.items():
        for name, p in plist:
            msg = _describe(f"{key} (parameter {name})", p)
            if msg:
                found.append(msg)
                break
    if found:
        return found
    was_training = module.training
    module.train(training)
    device = store.presence.device
    try:
        with torch.enable_grad():
            module.zero_grad(set_to_none=True)
            for start in range(0, store.n, chunk):
                batch = store.batch(torch.arange(start, min(store.n, start + chunk), device=device))
                params, global_term = _head_global_terms(module)
                for m in module.modalities:
                    found.append(_describe(f"modality {m!r}: its input", batch.encoder_input[m]))
                loc_m, scale_m = module.experts(batch)
                for i, m in enumerate(module.modalities):
                    present = batch.presence[i] > 0
                    found.append(_describe(f"modality {m!r}: its encoder (expert mean/scale)",
                                           torch.cat([loc_m[i][present], scale_m[i][present]])))
                loc, scale, _ = module.posterior(batch)
                found.append(_describe("the fused posterior of z", torch.cat([loc, scale])))
                z = loc + scale * torch.randn_like(loc)
                total = kl_scale * (0.5 * (((z - loc) / scale).square() - z.square()) + scale.log()).sum(-1)
                found.append(_describe("the KL term", total))
                decoded = {}
                for i, m in enumerate(module.modalities):
                    decoded[m] = module.decoders[m](z)
                    ll = decoder_log_likelihood(module.likelihoods[m], decoded[m], batch.observed[m],
                                                batch.cell_mask[m], batch.library[m]) * batch.presence[i]
                    found.append(_describe(f"modality {m!r}: its reconstruction log-likelihood", ll))
                    total = total + ll
                for h, head in module.heads.items():
                    target = module.head_target(h, batch, z, decoded, None)
                    ll = head.weight * head.log_likelihood(z, target, params[h])
                    found.append(_describe(f"head {h!r}: its log-likelihood", ll))
                    total = total + ll
                found = [f for f in found if f]
                if found:
                    break
                (-(total.sum() + global_term) / store.n).backward()
            if not found:
                for key, plist in groups.items():
                    for name, p in plist:
                        msg = p.grad is not None and _describe(f"{key}: the gradient of {name}", p.grad)
                        if msg:
                            found.append(msg)
                            break
            module.zero_grad(set_to_none=True)
    finally:
        module.train(was_training)
    # unique, in order
    return list(dict.fromkeys(f for f in found if f))[:4]


class GoodState:
    """Preallocated copy of a module's ``state_dict`` and its optimizer state (the last good state).

    :meth:`save` copies into the same buffers every time (no allocation, one memcpy per tensor);
    :meth:`restore` copies back. Used once per epoch by the SVI loop, so a faulty epoch is rerun
    from the state it started in.
    """

    def __init__(self, module: torch.nn.Module, optim: torch.optim.Optimizer):
        self.module, self.optim = module, optim
        self._module_buf: dict[str, torch.Tensor] | None = None
        self._optim_buf: dict | None = None

    def save(self) -> None:
        src = self.module.state_dict()
        if self._module_buf is None:
            self._module_buf = {k: v.detach().clone() for k, v in src.items()}
        else:
            for k, v in src.items():
                self._module_buf[k].copy_(v)
        state = self.optim.state
        if not state:
            self._optim_buf = None
            return
        if self._optim_buf is None or len(self._optim_buf) != len(state):
            self._optim_buf = {p: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in st.items()}
                               for p, st in state.items()}
        else:
            for p, st in state.items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        self._optim_buf[p][k].copy_(v)
                    else:
                        self._optim_buf[p][k] = v

    def restore(self) -> None:
        if self._module_buf is None:
            return
        with torch.no_grad():
            for k, v in self.module.state_dict().items():
                v.copy_(self._module_buf[k])
        if self._optim_buf is None:
            self.optim.state.clear()
            return
        for p, st in self._optim_buf.items():
            cur = self.optim.state[p]
            for k, v in st.items():
                if torch.is_tensor(v) and k in cur and torch.is_tensor(cur[k]):
                    cur[k].copy_(v)
                else:
                    cur[k] = v.clone() if torch.is_tensor(v) else v


class InterruptGuard:
    """Context manager that turns a ``KeyboardInterrupt`` into ``self.interrupted = True``.

    The SVI loop runs inside it; after an interrupt the loop's best-so-far state is kept and the
    caller is told (a :class:`~bayesfuse.exceptions.ConvergenceWarning`).
    """

    def __init__(self):
        self.interrupted = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            return True
        return False


class Epochs:
    """``for epoch in Epochs(start, stop)``: the epoch numbers, with :meth:`repeat` to rerun one."""

    def __init__(self, start: int, stop: int):
        self.next, self.stop = int(start), int(stop)

    def __iter__(self):
        while self.next < self.stop:
            epoch = self.next
            self.next += 1
            yield epoch

    def repeat(self) -> None:
        self.next -= 1
