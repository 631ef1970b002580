"""Post-fit refit of the survival head's parameter posterior: measurement and paired validation.

``--measure``: after a default fit, the survival head's guide sds (of ``b_k = cumsum`` of the
increments, and of ``w``) against (a) NUTS on
``q*(theta) ∝ exp(E_q(z|x)[log p(theta) + sum_n log p(y_n | z_n, theta)])`` with ``E_q(z|x)`` over 16
fixed latent draws of the training patients (an independent reference) and (b) the refitted guides
(mean-field SVI and Laplace, :mod:`bayesfuse.module.survival_refit`).

``--validation``: per cohort and partition, ONE fit (``survival_refit="none"``), then the same
fitted model evaluated as fitted and after each refit (paired: identical encoders and latent
draws; only the head's parameter posterior differs). Metrics of studies/survival_options/survival.py.

    PYTHONPATH=. python studies/survival_refit/survival_refit.py --measure --datasets tcga_gbmlgg metabric
    PYTHONPATH=. python studies/survival_refit/survival_refit.py --validation --val-seeds 1 2 3 --json out.json
    PYTHONPATH=. python studies/survival_refit/survival_refit.py --test --seeds 0 --json out_test.json
    PYTHONPATH=. python studies/survival_refit/survival_refit.py --timing --datasets tcga_gbmlgg support

``--timing``: one default fit per cohort, then the default refit (``laplace``, fitted centre) timed
with the closed-form Hessian of the package against the generic ``torch.autograd.functional.hessian``
of the same objective (the implementation before 2026-11-21), and the largest difference of the two
resulting posteriors.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "survival_options"))
import survival as sb  # noqa: E402  (studies/survival_options/survival.py)

import bayesfuse as bf  # noqa: E402
from bayesfuse.metrics import interval_coverage  # noqa: E402
from bayesfuse.module import survival_refit as sr  # noqa: E402
from bayesfuse.module.survival_refit import (  # noqa: E402
    refit_module_survival_heads,
    survival_prior_log_prob,
)


def fit_default(train, seed, cfg=None, refit="none"):
    cfg = {**sb.DEFAULTS, **(cfg or {})}
    model = bf.FusionModel(train, heads={"survival": sb._head(cfg)}, advanced=bf.AdvancedConfig(survival_refit=refit),
                           **sb._model_kwargs(cfg))
    t0 = time.perf_counter()
    model.fit(seed=seed, progress=False, **sb._fit_kwargs(cfg))
    model.fit_s_ = time.perf_counter() - t0
    return model


def _b_sd_from_increments(cov_incr, K):
    """sd of b = cumsum(b_incr) from the covariance (T, T) of the flat increments."""
    L = torch.tril(torch.ones(K, K, dtype=cov_incr.dtype))
    return torch.sqrt(torch.diagonal(L @ cov_incr[:K, :K] @ L.T))


def _w_sd(cov_incr, K, P):
    L = torch.tril(torch.ones(K, K, dtype=cov_incr.dtype))
    sds = []
    for p in range(P):
        idx = K + p * K + torch.arange(K)
        sds.append(torch.sqrt(torch.diagonal(L @ cov_incr[idx][:, idx] @ L.T)))
    return torch.stack(sds)   # (P, K)


def head_cov(head):
    """Covariance (T, T) of the head's current guide on the flat increments."""
    if head.has_fullrank_posterior:
        return head.post_tril @ head.post_tril.T
    _, sd = head.flat_guide()
    return torch.diag(sd.detach() ** 2)


def nuts_reference(model, n_z=16, num_samples=300, warmup=300, seed=0):
    """NUTS on q*(theta) ∝ exp(mean_m [log p(theta) + sum_n log p(y_n | z_mn, theta)]) over n_z fixed
    latent draws of the training patients (float64; the head alone, encoders fixed). Returns the
    draws of the flat increments (num_samples, T)."""
    from pyro.infer import MCMC, NUTS  # noqa: PLC0415

    module = model.module
    head = copy.deepcopy(module.heads["survival"]).double()
    head.clear_fullrank_posterior()
    store = model._store(model._train_data, strict_targets=True)
    with torch.no_grad():
        batch = store.full()
        loc, scale, _ = module.posterior(batch)
    tgt = {k: v.double() for k, v in batch.targets["survival"].items()}
    g = torch.Generator().manual_seed(seed)
    z = (loc.double() + scale.double() * torch.randn((n_z, *loc.shape), dtype=torch.float64, generator=g)).detach()

    def potential(params):
        theta = params["theta"]
        ll = head.log_likelihood(z, tgt, head.params_from_flat(theta.unsqueeze(0).expand(n_z, -1))).sum(-1).mean()
        return -(survival_prior_log_prob(head, theta.unsqueeze(0))[0] + ll)

    torch.manual_seed(seed)
    init = {"theta": head.flat_guide()[0].detach().clone()}
    mcmc = MCMC(NUTS(potential_fn=potential, adapt_mass_matrix=True, full_mass=False, max_tree_depth=8),
                num_samples=num_samples, warmup_steps=warmup, initial_params=init, disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()["theta"].detach()


def measure(name, seed=0, steps=600):
    _, train, _ = sb.load(name)
    model = fit_default(train, seed)
    head = model.module.heads["survival"]
    K, P = head.n_pieces, head.n_features
    store = model._store(model._train_data, strict_targets=True)
    ev = store.targets["survival"]
    t, e = ev["time"].numpy(), ev["event"].numpy() * ev["known"].numpy()
    piece = np.searchsorted(head.cuts.numpy(), t, side="right")
    events = np.bincount(piece[e > 0], minlength=K)
    rows = {"events": events}
    fitted = head_cov(head).double()
    rows["fitted guide"] = _b_sd_from_increments(fitted, K).numpy()
    w_fit = _w_sd(fitted, K, P)
    t0 = time.perf_counter()
    draws = nuts_reference(model)
    nuts_s = time.perf_counter() - t0
    cov_ref = torch.cov(draws.T)
    rows["NUTS reference"] = _b_sd_from_increments(cov_ref, K).numpy()
    w_ref = _w_sd(cov_ref, K, P)
    mean_ref = draws.mean(0)
    res, w_fam, loc_fam = {}, {}, {}
    for fam in ("meanfield", "laplace"):
        m = copy.deepcopy(model)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        refit_module_survival_heads(m.module, store, steps=steps, family=fam, center="mode")
        res[fam] = time.perf_counter() - t0
        h = m.module.heads["survival"]
        c = head_cov(h).double()
        rows[f"refit {fam}"] = _b_sd_from_increments(c, K).numpy()
        w_fam[fam] = float(_w_sd(c, K, P).median())
        hl = h.post_loc if h.has_fullrank_posterior else h.flat_guide()[0].detach()
        loc_fam[fam] = round(float((hl.double() - mean_ref).abs().div(torch.diagonal(cov_ref).sqrt()).max()), 2)
    df = pd.DataFrame(rows).T
    df.columns = [f"b{k + 1}" for k in range(K)]
    print(f"\n== {name}: sd of the baseline log-hazard b_k per piece (fit seed {seed}; {int(e.sum())} events, "
          f"{len(t)} training patients)")
    print(df.round(3).to_string())
    print(f"w sd (median over P x K): fitted {w_fit.median():.3f}, NUTS {w_ref.median():.3f}, refit {w_fam}; "
          f"ratio laplace/NUTS b: {np.round(rows['refit laplace'] / rows['NUTS reference'], 2).tolist()}")
    print(f"max |refit loc - NUTS mean| / NUTS sd over all increments: {loc_fam}; refit seconds: {res}; "
          f"NUTS seconds {nuts_s:.0f}; fit seconds {model.fit_s_:.0f}", flush=True)
    return {"dataset": name, "b_sd": {k: np.asarray(v).tolist() for k, v in rows.items()},
            "w_sd_median": {"fitted": float(w_fit.median()), "nuts": float(w_ref.median()), **w_fam},
            "loc_err_in_sd": loc_fam, "refit_s": res, "nuts_s": nuts_s}


def evaluate(model, test, grid, t, e, tr_t, tr_e, label, seed):
    post = model.predict(test, num_samples=300, seed=seed)
    surv_draws, risk, s_own = sb._post_outputs(post, grid, t)
    r = sb.metrics(label, tr_t, tr_e, t, e, risk, surv_draws.mean(0), grid, s_own)
    horizons = np.quantile(t, [0.25, 0.5, 0.75])
    r["cov_band"] = interval_coverage(t, e, surv_draws, grid, horizons, groups=3, prob=0.9).coverage
    r["cov_pred"] = interval_coverage(t, e, surv_draws, grid, horizons, groups=3, prob=0.9, km_error=True).coverage
    # mean width of the 90% band of S(t|x) at the three horizons (per patient, then averaged)
    idx = [int(np.argmin(np.abs(grid - h))) for h in horizons]
    q = np.quantile(surv_draws[:, :, idx], [0.05, 0.95], axis=0)
    r["band_width"] = float((q[1] - q[0]).mean())
    return r


def paired(name, validation, val_seed, seed, steps, families, baselines=False):
    _, train, test = sb.load(name, validation, val_seed)
    test_eval, t, e, tr_ok, tr_t, tr_e, grid = sb.eval_setup(train, test)
    model = fit_default(train, seed)
    rows = [evaluate(model, test_eval, grid, t, e, tr_t, tr_e, "no refit (survival_refit='none')", seed)]
    rows[0]["fit_s"] = model.fit_s_
    store = model._store(model._train_data, strict_targets=True)
    for fam in families:
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        family, _, center = fam.partition(":")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            refit_module_survival_heads(m.module, store, steps=steps, family=family, center=center or "fitted")
        r = evaluate(m, test_eval, grid, t, e, tr_t, tr_e, f"refit {fam}", seed)
        r["fit_s"] = time.perf_counter() - t0
        rows.append(r)
    if baselines:
        Xtr = sb.features(train).loc[train.sample_ids[tr_ok]]
        Xte = sb.features(test_eval)
        cr, cs, co = sb.run_cox(Xtr, Xte, tr_t, tr_e, grid, t)
        rows.append(sb.metrics("CoxPH", tr_t, tr_e, t, e, cr, cs, grid, co))
        rr, rs, ro = sb.run_rsf(Xtr, Xte, tr_t, tr_e, grid, t, seed)
        rows.append(sb.metrics("RSF", tr_t, tr_e, t, e, rr, rs, grid, ro))
    for r in rows:
        r.update(dataset=name, split=f"val{val_seed}" if validation else "test", seed=seed, n_test=int(len(t)))
    return rows


def summarize(rows) -> pd.DataFrame:
    """Per cohort and method: mean C, IBS, #splits with D-cal p > 0.05, mean |coverage - 0.9| (band / predictive),
    and the pass rule of docs/studies/survival.md ("Post-fit refit") against the no-refit rows of the same fits."""
    df = pd.DataFrame([r for r in rows if "cov_band" in r])
    df["dcal_pass"] = df["dcal_p"] > 0.05
    df["band_err"] = (df["cov_band"] - 0.9).abs()
    df["pred_err"] = (df["cov_pred"] - 0.9).abs()
    g = df.groupby(["dataset", "method"]).agg(harrell_c=("harrell_c", "mean"), ibs=("ibs", "mean"),
                                              dcal_pass=("dcal_pass", "sum"), splits=("split", "count"),
                                              band_err=("band_err", "mean"), pred_err=("pred_err", "mean"),
                                              band_width=("band_width", "mean")).reset_index()
    base = g[g["method"].str.startswith("no refit")].set_index("dataset")
    g["dC"] = g["harrell_c"] - g["dataset"].map(base["harrell_c"])
    g["dIBS"] = g["ibs"] - g["dataset"].map(base["ibs"])
    print(g.round(4).to_string(index=False))
    tot = df.groupby("method").agg(dcal_pass=("dcal_pass", "sum"), band_err=("band_err", "mean"),
                                   pred_err=("pred_err", "mean"), ibs=("ibs", "mean"), splits=("split", "count"))
    b = tot.loc[[m for m in tot.index if m.startswith("no refit")][0]]
    for m in tot.index:
        if m.startswith("no refit"):
            continue
        sub = g[g["method"] == m]
        checks = {"(1) C": bool((sub["dC"] >= -0.002).all()), "(2) IBS": bool((sub["dIBS"] <= 0.002).all()),
                  "(3) D-cal": bool(tot.loc[m, "dcal_pass"] >= b["dcal_pass"]),
                  "(4) band": bool(tot.loc[m, "band_err"] < b["band_err"]),
                  "(5) predictive": bool(tot.loc[m, "pred_err"] <= b["pred_err"] + 0.02)}
        print(f"{m}: D-cal pass {int(tot.loc[m, 'dcal_pass'])}/{int(tot.loc[m, 'splits'])} "
              f"(default {int(b['dcal_pass'])}); mean |band cov - 0.9| {tot.loc[m, 'band_err']:.3f} "
              f"(default {b['band_err']:.3f}); predictive {tot.loc[m, 'pred_err']:.3f} (default {b['pred_err']:.3f}); "
              f"{checks} -> {'PASS' if all(checks.values()) else 'FAIL'}")
    return g


def autograd_hessian(head, theta, z, target):
    """Reference: ``torch.autograd.functional.hessian`` of the refit objective (T backward passes)."""
    M = z.shape[0]

    def neg(th):
        s = th.unsqueeze(0).expand(M, -1)
        return -(survival_prior_log_prob(head, s)
                 + head.log_likelihood(z, target, head.params_from_flat(s)).sum(-1)).mean()

    with torch.enable_grad():
        H = torch.autograd.functional.hessian(neg, theta.detach())
    return 0.5 * (H + H.T)


def timing(name, seed=0, repeats=3):
    """Seconds of the default refit with the closed-form vs the autograd Hessian (same fit, same draws)."""
    _, train, _ = sb.load(name)
    model = fit_default(train, seed)
    store = model._store(model._train_data, strict_targets=True)
    out = {"dataset": name, "n_train": int(store.targets["survival"]["known"].sum()),
           "n_flat": int(model.module.heads["survival"].n_flat)}
    tril = {}
    for label, fn in (("closed form", sr.neg_log_joint_hessian), ("autograd", autograd_hessian)):
        secs = []
        for _ in range(repeats):
            m = copy.deepcopy(model)
            torch.manual_seed(seed)
            orig, sr.neg_log_joint_hessian = sr.neg_log_joint_hessian, fn
            try:
                t0 = time.perf_counter()
                refit_module_survival_heads(m.module, store, family="laplace", center="fitted")
                secs.append(time.perf_counter() - t0)
            finally:
                sr.neg_log_joint_hessian = orig
        out[f"{label} s (min of {repeats})"] = min(secs)
        tril[label] = m.module.heads["survival"].post_tril.double()
    out["max |L_closed - L_autograd| / max |L|"] = float((tril["closed form"] - tril["autograd"]).abs().max()
                                                         / tril["autograd"].abs().max())
    out["speed-up"] = out[f"autograd s (min of {repeats})"] / out[f"closed form s (min of {repeats})"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["tcga_gbmlgg", "metabric", "gbsg", "whas", "support"])
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--validation", action="store_true")
    ap.add_argument("--test", action="store_true")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--val-seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="fit seeds of --test")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--families", nargs="*", default=["laplace:fitted", "laplace:mode"],
                    help="refits to compare: 'laplace:fitted', 'laplace:mode', 'meanfield'")
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--summary", metavar="JSON", help="only summarise a --validation JSON (pass rule)")
    args = ap.parse_args()
    if args.summary:
        summarize(json.loads(Path(args.summary).read_text()))
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    out = []
    if args.measure:
        for name in args.datasets:
            out.append(measure(name, steps=args.steps))
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        return
    if args.timing:
        for name in args.datasets:
            out.append(timing(name))
            print(pd.Series(out[-1]).to_string(), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        print(pd.DataFrame(out).set_index("dataset").round(4).to_string())
        return
    runs = ([(n, True, vs, vs) for n in args.datasets for vs in args.val_seeds] if args.validation
            else [(n, False, 1, s) for n in args.datasets for s in args.seeds])
    cols = ["harrell_c", "uno_c", "ibs", "dcal_p", "cov_band", "cov_pred", "band_width", "fit_s"]
    for name, val, vs, seed in runs:
        rows = paired(name, val, vs, seed, args.steps, args.families, baselines=args.baselines)
        out.extend(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        df = pd.DataFrame(rows).set_index("method")
        print(f"\n== {name} [{rows[0]['split']}, fit seed {seed}] n_test={rows[0]['n_test']}", flush=True)
        print(df[[c for c in cols if c in df]].round(4).to_string(), flush=True)


if __name__ == "__main__":
    main()
