"""DeepSurv (Katzman et al. 2018) re-implemented in torch, as a BENCHMARK-ONLY reference baseline.

Written from the paper and from reading the DeepSurv repository (jaredleekatzman/DeepSurv, MIT; files
``deepsurv/deep_surv.py``, ``experiments/scripts/deepsurv_run.py``, ``experiments/deepsurv/Dockerfile.*``,
``experiments/deepsurv/models/*_selu_revision.0.json``); no code copied. It is not part of the package.

What is reproduced
------------------
* Network: ``len(hidden)`` dense layers, SELU, Glorot-uniform weights, zero biases, dropout ``p`` after each
  hidden layer (inverted dropout, as lasagne's ``DropoutLayer(rescale=True)``), then a linear 1-unit output
  = log hazard ratio ``h(x)``. Inputs standardised with the TRAINING mean and (population, ddof 0) sd.
* Loss: ``-sum_{i: e_i=1} [h_i - log sum_{j earlier in the time-descending sort order, j incl. i} exp h_j]``
  (data sorted by time descending, ``logcumsumexp``; tied times are not corrected: the risk set of a tied
  patient is what the sort order leaves, as in DeepSurv) ``+ L2_reg * sum of squared WEIGHT matrices``
  (lasagne ``regularize_layer_params(network, l2)``: ``l2 = sum(x**2)``, weights only, biases not penalised).
  Full batch, one update per epoch, dropout active in the training pass, ``n_epochs`` epochs, no early
  stopping (the h5 files have no validation set). Predictions are deterministic (dropout off).
* Optimiser, two variants (``optimizer=``):

  - ``"as_run"`` (default): lasagne Adam (beta1 0.9, beta2 0.999, eps 1e-8, the bias correction folded into
    the step size: ``step = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``) at the CONSTANT initial
    learning rate, no momentum. This is what ``DeepSurv.train`` executes as written (read at commits 01aab1a
    and 6c00f76, identical there): the learning rate is a ``theano.shared`` compiled into the update, and the
    loop's ``lr = learning_rate / (1 + epoch * lr_decay)`` only rebinds a Python name (the shared value is
    never ``set_value``-d), so the decay never reaches the update; ``momentum`` is passed to the compiled
    update as ``numpy.array(0)``, which is falsy, so ``apply_nesterov_momentum`` is never applied (had it been,
    its call ``apply_nesterov_momentum(updates, params, learning_rate, momentum=...)`` passes momentum twice).
    This reading of the code could not be checked by running it (Theano/lasagne are not installed here).
  - ``"as_intended"``: what the code evidently meant: the same Adam with ``lr_t = lr / (1 + epoch *
    lr_decay)`` (epoch counted from 0), followed by lasagne's Nesterov momentum on the Adam updates
    (``x = mu * velocity + (adam_new - p); velocity <- x; p <- mu * x + adam_new``) with ``mu = 0`` for
    epochs 0-9 and ``mu = momentum`` from epoch 10 on.

* Epochs: the last versions of ``experiments/deepsurv/Dockerfile.<name>`` pass ``--num_epochs`` metabric
  500 (an earlier version, with a different model json, 1500), gbsg 1000, whas 1200, support 800 (whas and
  support Dockerfiles still name the older ``*_selu_0`` / ``*_adam_0`` model jsons; the
  ``*_selu_revision.0`` hyper-parameters are used here for all four). ``--epochs`` overrides;
  ``--configs earlier`` uses the model jsons the earlier Dockerfiles named, with their epochs.
* C-index: ``lifelines.utils.concordance_index(t, -h, e)`` on the test split, checked equal to
  ``bayesfuse.metrics.concordance_harrell(t, e, h)`` (DeepSurv itself scores ``-exp(h)``: the same order).

Split and features: those of studies/survival_options/survival.py (``load``, ``features``, ``eval_setup``): the dataset's
``split`` column (= the h5 file's train / test groups), test patients with time <= 0 left out of the metric
(metabric: 1, censored at 0, which enters no comparable pair, so C is unchanged).

    PYTHONPATH=. python studies/survival_deepsurv/deepsurv_reference.py --seeds 10 --json out_deepsurv.json
    PYTHONPATH=. python studies/survival_deepsurv/deepsurv_reference.py --datasets metabric --epochs 1500 --seeds 10
    PYTHONPATH=. python studies/survival_deepsurv/deepsurv_reference.py --configs earlier --optimizer as_run --seeds 10
    PYTHONPATH=. python studies/survival_deepsurv/deepsurv_reference.py --bootstrap --json out_bootstrap.json

``--bootstrap``: paired bootstrap (test patients resampled with replacement, 2000 resamples, seeded) of
bayesfuse's test Harrell C (default model, fit seed 0) and of its differences to RSF, CoxPH and this DeepSurv
(seed 0, ``optimizer`` as given), on the same split; ``scipy.stats.bootstrap(paired=True,
method="percentile", vectorized=False)`` with a vector-valued statistic (one set of resamples for all rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "survival_options"))  # studies/survival_options/survival.py

# DeepSurv repository, experiments/deepsurv/models/<name>_model_selu_revision.0.json
CONFIGS = {
    "metabric": dict(learning_rate=0.0020065103592061526, dropout=0.034404296875, lr_decay=0.00055220703125,
                     momentum=0.8109013671875, L2_reg=4.6593974609375, hidden=(42, 42, 42), n_in=9),
    "support": dict(learning_rate=0.03279227024343838, dropout=0.1982763671875, lr_decay=0.000645986328125,
                    momentum=0.94504443359375, L2_reg=3.54434228515625, hidden=(33, 33, 33), n_in=14),
    "gbsg": dict(learning_rate=0.0004991066534650134, dropout=0.0783935546875, lr_decay=0.000746533203125,
                 momentum=0.82554833984375, L2_reg=1.59179931640625, hidden=(20, 20, 20), n_in=7),
    "whas": dict(learning_rate=0.023094096518941305, dropout=0.01724365234375, lr_decay=0.0009819482421875,
                 momentum=0.926554443359375, L2_reg=2.364680908203125, hidden=(26, 26, 26), n_in=6),
}
# last version of experiments/deepsurv/Dockerfile.<name> (--num_epochs)
EPOCHS = {"metabric": 500, "support": 800, "gbsg": 1000, "whas": 1200}
# the model jsons named by the EARLIER versions of the Dockerfiles (commit 799cd6a / 30b1654; whas and support
# Dockerfiles never moved to the revision jsons): experiments/deepsurv/models/metabric_IHC4_clinical_adam_0.json,
# support_selu_model_adam_0.json, gbsg_selu_adam_model_0.json, whas_model_selu_0.json, with those Dockerfiles' epochs
CONFIGS_EARLIER = {
    "metabric": dict(learning_rate=0.010289691253027908, dropout=0.160087890625, lr_decay=0.0041685546875,
                     momentum=0.8439658203125, L2_reg=10.890986328125, hidden=(41,), n_in=9),
    "support": dict(learning_rate=0.047277902766138385, dropout=0.2553173828125, lr_decay=0.00257333984375,
                    momentum=0.85890283203125, L2_reg=8.1196630859375, hidden=(44,), n_in=14),
    "gbsg": dict(learning_rate=0.153895727328729, dropout=0.6606318359375, lr_decay=0.00566708984375,
                 momentum=0.88674658203125, L2_reg=6.5512451171875, hidden=(8,), n_in=7),
    "whas": dict(learning_rate=0.023825980458515722, dropout=0.0899951171875, lr_decay=0.00058173828125,
                 momentum=0.83831005859375, L2_reg=2.8032470703125, hidden=(40, 40, 40), n_in=6),
}
EPOCHS_EARLIER = {"metabric": 1500, "support": 800, "gbsg": 1000, "whas": 1200}
CONFIG_SETS = {"revision": (CONFIGS, EPOCHS), "earlier": (CONFIGS_EARLIER, EPOCHS_EARLIER)}
# published test C (README "Published numbers" of each dataset; metabric: arXiv version 0.6434)
PUBLISHED = {"metabric": 0.6545, "support": 0.6189, "gbsg": 0.6684, "whas": 0.8667}
PUBLISHED_CPH = {"metabric": 0.6317, "support": 0.5831, "whas": 0.8160}
OPTIMIZERS = ("as_run", "as_intended")


class DeepSurvNet(nn.Module):
    """SELU MLP -> 1 unit (log hazard ratio), Glorot-uniform weights, zero biases, dropout after each hidden layer.

    Parameters
    ----------
    n_in : int
        Number of input columns.
    hidden : sequence of int
        Hidden layer widths (empty: a linear Cox model).
    dropout : float
        Dropout probability after each hidden layer (0 = none).
    """

    def __init__(self, n_in: int, hidden=(), dropout: float = 0.0):
        super().__init__()
        if n_in < 1:
            raise ValueError(f"DeepSurvNet: n_in must be >= 1, got {n_in}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DeepSurvNet: dropout must lie in [0, 1), got {dropout}")
        layers, width = [], n_in
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.SELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)      # = lasagne GlorotUniform(gain=1)
                nn.init.zeros_(m.bias)                  # = lasagne Constant(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n, n_in) standardised -> log hazard ratio (n,)."""
        return self.net(x).squeeze(-1)

    def weights(self):
        """The weight matrices (what lasagne's l2 regularises; biases excluded)."""
        return [m.weight for m in self.net if isinstance(m, nn.Linear)]


def neg_partial_loglik(risk_desc: torch.Tensor, event_desc: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood, SUMMED over events, of data sorted by time DESCENDING.

    Parameters
    ----------
    risk_desc : tensor, shape (n,)
        Log hazard ratios in time-descending order.
    event_desc : tensor, shape (n,)
        1 = event, 0 = censored, same order.

    Returns
    -------
    scalar tensor ``-sum_i e_i (h_i - log sum_{j <= i} exp h_j)`` (no tie correction).
    """
    return -((risk_desc - torch.logcumsumexp(risk_desc, 0)) * event_desc).sum()


def deepsurv_loss(net: DeepSurvNet, x_desc, e_desc, l2_reg: float) -> torch.Tensor:
    """DeepSurv's training loss: summed negative partial log-likelihood + ``l2_reg * sum W**2`` (weights only)."""
    loss = neg_partial_loglik(net(x_desc), e_desc)
    if l2_reg:
        loss = loss + l2_reg * sum((w ** 2).sum() for w in net.weights())
    return loss


@dataclass
class DeepSurvFit:
    """A fitted DeepSurv: the network (eval mode), training mean / sd (n_in,), per-epoch training losses."""

    net: DeepSurvNet
    mean_: np.ndarray
    std_: np.ndarray
    losses_: list = field(default_factory=list)
    fit_s: float = 0.0

    def predict_risk(self, X) -> np.ndarray:
        """Log hazard ratio (n,) of raw covariates ``X`` (n, n_in), standardised with the training statistics."""
        p = next(self.net.parameters())
        x = torch.as_tensor((np.asarray(X, float) - self.mean_) / self.std_, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            return self.net.eval()(x).cpu().numpy().astype(float)


def fit_deepsurv(X, time_, event, *, hidden=(), dropout=0.0, learning_rate=1e-3, lr_decay=0.0, momentum=0.0,
                 L2_reg=0.0, n_epochs=500, optimizer="as_run", seed=0, dtype=torch.float32, device="cpu",
                 **_ignored) -> DeepSurvFit:
    """Train DeepSurv full-batch for ``n_epochs`` (one update per epoch); see the module docstring.

    Parameters
    ----------
    X : array, shape (n, d)
        Raw training covariates (standardised here with their own mean / sd).
    time_, event : arrays, shape (n,)
        Follow-up time and event indicator.
    optimizer : {"as_run", "as_intended"}
        Constant-lr lasagne Adam (what the DeepSurv code executes) or Adam with power lr decay plus
        Nesterov momentum from epoch 10 (what it intended).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"fit_deepsurv: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    X = np.asarray(X, float)
    t = np.asarray(time_, float)
    e = np.asarray(event, float)
    if X.ndim != 2 or X.shape[0] != t.shape[0] or e.shape != t.shape:
        raise ValueError(f"fit_deepsurv: X must be (n, d) with time/event (n,); got {X.shape}, {t.shape}, {e.shape}")
    if not e.any():
        raise ValueError("fit_deepsurv: no events; the partial likelihood is constant")
    mean, std = X.mean(0), X.std(0)
    if np.any(std == 0):
        raise ValueError(f"fit_deepsurv: constant columns {np.flatnonzero(std == 0).tolist()}; drop them first")
    order = np.argsort(t, kind="stable")[::-1].copy()        # time descending (as DeepSurv's prepare_data)
    x_desc = torch.as_tensor(((X - mean) / std)[order], dtype=dtype, device=device)
    e_desc = torch.as_tensor(e[order], dtype=dtype, device=device)

    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        net = DeepSurvNet(X.shape[1], hidden, dropout).to(device=device, dtype=dtype)
        params = list(net.parameters())
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        vel = [torch.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8                       # lasagne.updates.adam defaults
        losses = []
        t0 = time.perf_counter()
        for epoch in range(n_epochs):
            if optimizer == "as_run":
                lr, mu = learning_rate, 0.0
            else:
                lr = learning_rate / (1.0 + epoch * lr_decay)
                mu = momentum if epoch >= 10 else 0.0
            net.train()
            loss = deepsurv_loss(net, x_desc, e_desc, L2_reg)
            grads = torch.autograd.grad(loss, params)
            step_no = epoch + 1
            a_t = lr * np.sqrt(1 - b2 ** step_no) / (1 - b1 ** step_no)
            with torch.no_grad():
                for p, g, mi, vi, ve in zip(params, grads, m, v, vel):
                    mi.mul_(b1).add_(g, alpha=1 - b1)
                    vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                    delta = -a_t * mi / (vi.sqrt() + eps)     # adam_new - p
                    if mu:
                        ve.mul_(mu).add_(delta)               # x = mu * velocity + (adam_new - p)
                        p.add_(mu * ve + delta)               # p <- mu * x + adam_new
                    else:
                        ve.copy_(delta)                       # lasagne keeps x as the velocity either way
                        p.add_(delta)
            losses.append(float(loss.detach()))
        fit_s = time.perf_counter() - t0
    net.eval()
    return DeepSurvFit(net, mean, std, losses, fit_s)


# ------------------------------------------------------------------------------------------ benchmark
def _split(name):
    """Training covariates / times / events (times > 0) and the scored test patients, as in survival.py."""
    import survival as S

    _, train, test = S.load(name)
    test_eval, t, e, tr_ok, tr_t, tr_e, grid = S.eval_setup(train, test)
    Xtr = S.features(train).loc[train.sample_ids[tr_ok]]
    Xte = S.features(test_eval)
    return dict(train=train, test=test, test_eval=test_eval, Xtr=Xtr, Xte=Xte, t=t, e=e, tr_t=tr_t, tr_e=tr_e,
                grid=grid)


def harrell(t, e, risk) -> float:
    """Harrell C as DeepSurv scores it (lifelines, -risk), asserted equal to bayesfuse's."""
    from lifelines.utils import concordance_index

    from bayesfuse.metrics import concordance_harrell

    c = float(concordance_index(t, -np.asarray(risk), e))
    c_bf = concordance_harrell(t, e, risk)
    assert abs(c - c_bf) < 1e-12, (c, c_bf)
    return c


def cox_unpenalised(Xtr, tr_t, tr_e, Xte):
    from lifelines import CoxPHFitter

    A = Xtr.reset_index(drop=True).copy()
    A.columns = [f"f{i}" for i in range(A.shape[1])]
    B = Xte.reset_index(drop=True).copy()
    B.columns = A.columns
    A["T"], A["E"] = tr_t, tr_e.astype(int)
    return CoxPHFitter(penalizer=0.0).fit(A, "T", "E").predict_log_partial_hazard(B).to_numpy()


def reproduce(name, seeds, epochs=None, optimizer="as_run", configs="revision"):
    """Test C of DeepSurv at ``seeds`` with the published hyper-parameters, plus CoxPH anchors."""
    import survival as S

    cfg_set, ep_set = CONFIG_SETS[configs]
    cfg = cfg_set[name]
    d = _split(name)
    n_in = d["Xtr"].shape[1]
    n_ep = epochs or ep_set[name]
    cs, secs = [], []
    for s in seeds:
        fit = fit_deepsurv(d["Xtr"].to_numpy(), d["tr_t"], d["tr_e"], n_epochs=n_ep, optimizer=optimizer, seed=s,
                           **cfg)
        cs.append(harrell(d["t"], d["e"], fit.predict_risk(d["Xte"].to_numpy())))
        secs.append(fit.fit_s)
    cox_r = S.run_cox(d["Xtr"], d["Xte"], d["tr_t"], d["tr_e"], d["grid"], d["t"])[0]
    cox0_r = cox_unpenalised(d["Xtr"], d["tr_t"], d["tr_e"], d["Xte"])
    cs = np.array(cs)
    return {"dataset": name, "configs": configs, "optimizer": optimizer, "epochs": n_ep, "n_in": n_in, "n_in_published": cfg["n_in"],
            "n_test": int(len(d["t"])), "seeds": list(seeds), "c": cs.tolist(), "mean": cs.mean(),
            "sd": cs.std(ddof=1) if len(cs) > 1 else float("nan"), "min": cs.min(), "max": cs.max(),
            "published": PUBLISHED[name], "coxph_pen0.1": harrell(d["t"], d["e"], cox_r),
            "coxph_unpen": harrell(d["t"], d["e"], cox0_r), "published_cph": PUBLISHED_CPH.get(name),
            "fit_s_mean": float(np.mean(secs))}


def bootstrap(name, n_resamples=2000, seed=0, optimizer="as_run", deepsurv=True):
    """Paired percentile bootstrap over test patients of bayesfuse's C and its differences to the baselines."""
    import survival as S
    from scipy.stats import bootstrap as sp_bootstrap

    d = _split(name)
    t, e = d["t"], d["e"]
    t0 = time.perf_counter()
    out = S.run_bayesfuse(d["train"], d["test_eval"], d["grid"], t, dict(S.DEFAULTS), seed=0)
    risks = {"bayesfuse": out[2]}
    bf_s = time.perf_counter() - t0
    risks["RSF"] = S.run_rsf(d["Xtr"], d["Xte"], d["tr_t"], d["tr_e"], d["grid"], t, 0)[0]
    risks["CoxPH"] = S.run_cox(d["Xtr"], d["Xte"], d["tr_t"], d["tr_e"], d["grid"], t)[0]
    if deepsurv and name in CONFIGS:
        fit = fit_deepsurv(d["Xtr"].to_numpy(), d["tr_t"], d["tr_e"], n_epochs=EPOCHS[name], optimizer=optimizer,
                           seed=0, **CONFIGS[name])
        risks["DeepSurv"] = fit.predict_risk(d["Xte"].to_numpy())
    names = list(risks)
    point = {k: harrell(t, e, r) for k, r in risks.items()}

    from lifelines.utils import concordance_index

    def stat(tt, ee, *rs):
        cs = [concordance_index(tt, -r, ee) for r in rs]
        return np.array([cs[0]] + [cs[0] - c for c in cs[1:]])

    t1 = time.perf_counter()
    res = sp_bootstrap((t, e.astype(float), *[risks[k] for k in names]), stat, paired=True, vectorized=False,
                       n_resamples=n_resamples, method="percentile", confidence_level=0.95,
                       random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    rows = [{"quantity": "C bayesfuse", "estimate": point["bayesfuse"], "lo95": lo[0], "hi95": hi[0],
             "boot_sd": res.standard_error[0]}]
    for i, k in enumerate(names[1:], 1):
        rows.append({"quantity": f"C bayesfuse - C {k}", "estimate": point["bayesfuse"] - point[k],
                     "lo95": lo[i], "hi95": hi[i], "boot_sd": res.standard_error[i]})
    return {"dataset": name, "n_test": int(len(t)), "n_events": int(e.sum()), "point_c": point, "rows": rows,
            "published_deepsurv": PUBLISHED.get(name), "bayesfuse_fit_s": bf_s,
            "bootstrap_s": time.perf_counter() - t1, "n_resamples": n_resamples, "seed": seed,
            "deepsurv_optimizer": optimizer if "DeepSurv" in risks else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--seeds", type=int, default=10, help="fit seeds 0..N-1 per dataset")
    ap.add_argument("--epochs", type=int, default=None, help="override the Dockerfile epochs")
    ap.add_argument("--optimizer", nargs="*", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    ap.add_argument("--configs", choices=list(CONFIG_SETS), default="revision",
                    help="hyper-parameters: the *_selu_revision.0 jsons, or those the earlier Dockerfiles named")
    ap.add_argument("--bootstrap", action="store_true", help="paired bootstrap of the test C instead")
    ap.add_argument("--n-resamples", type=int, default=2000)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    out = []
    if args.bootstrap:
        names = args.datasets or ["metabric", "gbsg", "whas", "tcga_gbmlgg", "support"]
        for name in names:
            r = bootstrap(name, args.n_resamples, optimizer=args.optimizer[0])
            out.append(r)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=float))
            print(f"\n== {name} (n_test={r['n_test']}, events={r['n_events']}; point C "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r["point_c"].items())
                  + f"; DeepSurv published {r['published_deepsurv']}; bayesfuse fit {r['bayesfuse_fit_s']:.0f} s,"
                    f" bootstrap {r['bootstrap_s']:.0f} s)")
            print(pd.DataFrame(r["rows"]).round(4).to_string(index=False))
        return
    names = args.datasets or list(CONFIGS)
    for opt in args.optimizer:
        for name in names:
            r = reproduce(name, range(args.seeds), args.epochs, opt, args.configs)
            out.append(r)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=float))
            if r["n_in"] != r["n_in_published"]:
                print(f"WARNING {name}: {r['n_in']} input columns, the published model has n_in "
                      f"{r['n_in_published']}")
    df = pd.DataFrame(out)[["dataset", "configs", "optimizer", "epochs", "n_in", "n_test", "mean", "sd", "min", "max",
                            "published", "coxph_pen0.1", "coxph_unpen", "published_cph", "fit_s_mean"]]
    print(df.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
