"""Epoch count chosen by K-fold cross-validation of the survival head's validation NLL, then one refit on every
training patient for that many epochs (study, 2026-12-08; uses a private method of FusionModel, not maintained).

    python studies/wide_survival/cv_epochs.py K TAG MAX_EPOCHS SEEDS [ROW_PATTERNS...]
    e.g. python studies/wide_survival/cv_epochs.py 5 cv5 200 0,1,2 'surv:*resplit'

Environment: ``EMIN`` = first epoch allowed (default 30, the end of the KL warm-up); ``PROFILE=1`` replaces the
criterion by the validation NLL minimised over a scale ``c`` of the log-hazard's latent part (``b + c g(z)^T w``,
``c`` in 0-2), a criterion that ignores over-dispersed risks; ``CONCORDANCE=1`` by minus the fold's Harrell C (each
fold's C weighted by its patients). Writes benchmarks/results/zoo_TAG.json.
"""

from __future__ import annotations

import math
import os
import sys

import _harness as H
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

import bayesfuse as bf
import bayesfuse.train.svi as svi
from bayesfuse.model.fusion_model import FusionModel

SCALES = torch.tensor([0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0])


def _log_hazard_draws(module, store, num_samples, seed):
    """(head, params, target, log-hazard (S, N, K)) of the store's patients, from a private RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = module.heads["survival"]
        params = head.draw_params(num_samples)
        batch = store.batch(torch.arange(store.n, device=store.presence.device))
        loc, scale, _ = module.posterior(batch, None)
        z = loc + torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device) * scale
        tgt = module.head_target("survival", batch, z)
        return head, params, tgt, head.log_hazard(z, params, tgt.get("covariates"))


def profiled_nll(module, store, chunk=1024, num_samples=8, seed=0):
    """Survival head's posterior-predictive NLL per patient, minimised over the scale of the latent part."""
    head, params, tgt, lh = _log_hazard_draws(module, store, num_samples, seed)
    b = params["b"].unsqueeze(-2)
    best = None
    for c in SCALES.to(lh.dtype):
        ll = head._ll(b + c * (lh - b), tgt["time"], tgt["event"])
        ll = torch.where(tgt["known"] > 0, ll, torch.zeros_like(ll))
        v = -(torch.logsumexp(ll, 0) - math.log(num_samples)).sum() / store.n
        best = v if best is None else torch.minimum(best, v)
    return best


def negative_concordance(module, store, chunk=1024, num_samples=8, seed=0):
    """Minus Harrell's C of the validation patients, risk = posterior-mean log-hazard summed over the pieces."""
    _, _, tgt, lh = _log_hazard_draws(module, store, num_samples, seed)
    risk = lh.mean(0).sum(-1)
    t, e, known = tgt["time"], tgt["event"] > 0, tgt["known"] > 0
    comparable = (t[:, None] < t[None, :]) & e[:, None] & known[:, None] & known[None, :]
    conc = (risk[:, None] > risk[None, :]).to(risk.dtype) + 0.5 * (risk[:, None] == risk[None, :]).to(risk.dtype)
    return -(conc * comparable).sum() / comparable.sum().clamp(min=1)


def main():
    k, tag, emax, seeds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4].split(",")]
    emin = int(os.environ.get("EMIN", "30"))
    if os.environ.get("PROFILE"):
        svi.validation_head_nll = profiled_nll
    if os.environ.get("CONCORDANCE"):
        svi.validation_head_nll = negative_concordance
    orig = FusionModel._validation_split

    def fit_predict(train, test_eval, seed, extra):
        head = bf.heads.Survival(time="time", event="event", nonpositive_times="drop")
        ids = np.asarray(train.sample_ids)
        curve = 0.0
        for f, (_, va) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(
                ids, train.targets["event"].to_numpy())):
            held = set(ids[va])
            FusionModel._validation_split = lambda self, i, d, fr, s, held=held: (
                np.array([x for x in i if x not in held]), np.array([x for x in i if x in held]))
            m = FusionModel(train, heads={"survival": head})
            m.fit(seed=seed * 10 + f, progress=False, max_epochs=emax, patience=10 ** 6, early_stopping="heads",
                  calibrate=False, validation_fraction=0.1)
            curve = curve + m.history_["val_loss"].to_numpy() * len(va)
        FusionModel._validation_split = orig
        curve[:emin - 1] = np.inf
        extra["epochs"] = int(np.argmin(curve)) + 1
        model = FusionModel(train, heads={"survival": head})
        model.fit(seed=seed, progress=False, max_epochs=extra["epochs"], validation_fraction=0)
        return model.predict(test_eval, num_samples=200, seed=seed)

    H.run(tag, sys.argv[5:], seeds, fit_predict)


if __name__ == "__main__":
    main()
