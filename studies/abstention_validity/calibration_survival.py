"""Survival section of studies/abstention_validity/calibration.py: SurvivalBound, the survival Abstainer, the multi-task Abstainer.

Run alone:  PYTHONPATH=. python studies/abstention_validity/calibration.py --only survival [--n-splits 200] [--json ...]

Protocol (per cohort: the simulator, tcga_gbmlgg, metabric, support, whas). ONE model per cohort is
fitted on half of the patients (random, seed 0; fitting a model per re-split is impossible on this
machine); the other half (the "pool") is predicted once and re-split ``n_splits`` times into
calibration / test halves (stratified by event). The censoring model is the Kaplan-Meier estimate of
the *training* half's censoring (independent of the pool). Per split, on the test half:

* lower bound (alpha = 0.1, cut-off c0 chosen once per cohort by ``choose_cutoff`` from the pool's
  posteriors and the censoring model, no pool outcomes): coverage among test patients whose status is
  known (event observed, or censored after the bound), the IPCW estimate, the worst case (censored
  before the bound = missed), and on the simulator against the true event times;
* survival Abstainer at horizon tau (``default_horizon`` of the training outcomes): IPCW wrong-call rate
  among accepted test patients, a violation when above max_risk; on the simulator also against the true times;
* simulator only, fresh calibration draws: 8,000 further simulated patients; each split draws 1,200
  calibration patients from the first 4,000 and checks bounds on the last 4,000 and calls on every
  non-calibration patient against the TRUE times, with the Kaplan-Meier censoring model of the training
  patients or the simulator's true censoring law (the guarantee's population, not one re-split pool);
* the same two procedures on lifelines CoxPH predictions (same features, same splits, same selection
  draws) for usefulness: share of patients answered, and bound height at kept coverage;
* negative controls: the over-confident model (posterior-predictive log-time spread around each
  patient's median shrunk 3x: ``S'(t) = S(m (t / m) ** 3)``), used as a plug-in (its own alpha-quantile
  as the bound; its own risk estimate for the abstention threshold) and through conformal / LTT (which
  must stay valid); and the plug-in threshold without the LTT correction (empirical error among the
  selected calibration patients <= max_risk).
* multi-task (simulator and tcga_gbmlgg: subtype + survival): ``Abstainer(max_risk={"subtype": 0.05,
  "survival": 0.2})``: per-head and joint violation shares, share answered.

Bounds are computed from each patient's predictive CDF on a fixed grid (2001 points on [0, c0]; 401 for the
over-confident model), rounded down (conservative by at most one grid step); the first split of each cohort checks that this equals
``bf.SurvivalBound`` and ``bf.Abstainer`` to that precision.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

import bayesfuse as bf
from bayesfuse.calibration import (
    Abstainer,
    CalibrationWarning,
    KaplanMeierCensoring,
    SurvivalBound,
    conformal_lower_level,
    default_grid,
    ipcw_weights,
    ltt_multi_risk,
    make_splits,
    select_at_risk,
    subset_posterior,
)
from bayesfuse.calibration.censoring import status_at
from bayesfuse.calibration.survival_abstain import survival_calls
from bayesfuse.calibration.survival_bound import _predictive_cdf_grid, bound_coverage, choose_cutoff
from bayesfuse.evaluation.survival_report import default_horizon
from bayesfuse.posterior import survival as ps

ALPHA = 0.1
SHRINK = 3.0
STARTS4 = ", 4 starts"   # suffix of the rules run with Abstainer(starts=4), the default (fallback procedure)
N_GRID = 2001


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ models
class Predictive:
    """One model's predictions on the pool: CDF at own times, quantiles on a grid, risk at the horizon.

    ``cdf_grid`` is a callable computing the (n_patients, len(grid)) CDF table on first use.
    """

    def __init__(self, cdf_grid, grid: np.ndarray, cdf_own, risk_tau: np.ndarray):
        self._make_grid, self.grid, self.cdf_own, self.risk_tau = cdf_grid, grid, cdf_own, risk_tau
        self._table = None

    @property
    def cdf_grid(self) -> np.ndarray:
        if self._table is None:
            self._table = self._make_grid()
        return self._table

    def quantile(self, beta: float, idx: np.ndarray) -> np.ndarray:
        """Largest grid time below the beta-quantile (exact quantile rounded down), patients ``idx``."""
        if not np.isfinite(beta) or beta <= 0:
            return np.zeros(len(idx))
        reach = self.cdf_grid[idx] >= beta
        first = np.where(reach.any(axis=1), np.argmax(reach, axis=1), len(self.grid))
        return self.grid[np.clip(first - 1, 0, None)]

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        high = self.risk_tau >= 0.5
        return high, np.where(high, self.risk_tau, 1 - self.risk_tau)


def bf_predictive(post: bf.Posterior, c0: float, tau: float, warp: float | None = None) -> Predictive:
    """bayesfuse posterior-predictive (``warp``: log-time spread shrunk ``warp``-fold around each median)."""
    lh, cuts = np.asarray(post.draws["survival"]["log_hazard"]), post.survival_cuts("survival")
    grid = np.linspace(0.0, c0, N_GRID)
    if warp is None:
        return Predictive(lambda: _predictive_cdf_grid(lh, cuts, grid), grid,
                          lambda t, idx: 1 - ps.predictive_survival_at(lh[:, idx], cuts, t),
                          survival_calls(post, "survival", tau)[0])     # the Abstainer's own risk
    med = ps.predictive_quantile_time(lh, cuts, 0.5, upper=1e4 * c0)

    def g(t, m):                      # S'(t) = S(g(t)), g(t) = m (t / m) ** warp
        return m * (np.maximum(t, 0.0) / m) ** warp

    coarse = np.linspace(0.0, c0, 401)

    def table():
        return np.stack([1 - ps.predictive_survival_at(lh, cuts, g(np.full(post.n_patients, t), med))
                         for t in coarse], axis=1)

    return Predictive(table, coarse, lambda t, idx: 1 - ps.predictive_survival_at(lh[:, idx], cuts, g(t, med[idx])),
                      1 - ps.predictive_survival_at(lh, cuts, g(np.full(post.n_patients, tau), med)))


def cox_predictive(train: bf.MultiModalData, pool: bf.MultiModalData, c0: float, tau: float) -> Predictive:
    """lifelines CoxPH (penalizer 0.1) on standardised concatenated features (missing cells: train mean)."""
    from lifelines import CoxPHFitter

    def feats(d):
        return pd.concat([d.modality(m).add_prefix(f"{m}:") for m in d.modality_names], axis=1).reindex(d.sample_ids)

    xtr, xpo = feats(train), feats(pool)
    keep = xtr.columns[xtr.std().fillna(0).to_numpy() > 0]
    mu, sd = xtr[keep].mean(), xtr[keep].std()
    xtr, xpo = ((xtr[keep] - mu) / sd).fillna(0.0), ((xpo.reindex(columns=keep) - mu) / sd).fillna(0.0)
    tg = train.targets.reindex(train.sample_ids)
    ok = (tg["time"] > 0).to_numpy()
    df = xtr[ok].assign(_t=tg["time"].to_numpy()[ok], _e=tg["event"].to_numpy()[ok])
    cph = CoxPHFitter(penalizer=0.1).fit(df, "_t", "_e")
    ph = cph.predict_partial_hazard(xpo).to_numpy()
    h0 = cph.baseline_cumulative_hazard_
    bt, bh = h0.index.to_numpy(dtype=float), h0.iloc[:, 0].to_numpy()

    def H0(t):
        k = np.searchsorted(bt, t, side="right") - 1
        return np.where(k >= 0, bh[np.clip(k, 0, None)], 0.0)

    grid = np.linspace(0.0, c0, N_GRID)
    return Predictive(lambda: 1 - np.exp(-H0(grid)[None, :] * ph[:, None]), grid, lambda t, idx: 1 - np.exp(-H0(t) * ph[idx]), 1 - np.exp(-H0(tau) * ph))


# ------------------------------------------------------------------------------------------ setup
def setup_cohort(name: str, data: bf.MultiModalData, heads: dict, epochs: int, num_samples: int,
                 train_ids=None, pool_ids=None, latent_dim: int | str = "auto", fit_seed: int = 0) -> dict:
    """Fit one model on the training half (random half of ``data``, drawn with ``fit_seed``, unless
    ``train_ids`` / ``pool_ids`` are given) with ``seed=fit_seed``, predict the pool once, and set up the
    censoring model, horizon, cut-off and the CoxPH / over-confident comparators."""
    t0 = time.perf_counter()
    if train_ids is None:
        ids = data.sample_ids
        perm = np.random.default_rng(fit_seed).permutation(len(ids))
        train_ids, pool_ids = ids[np.sort(perm[: len(ids) // 2])], ids[np.sort(perm[len(ids) // 2:])]
    train, pool = data.subset(ids=train_ids), data.subset(ids=pool_ids)
    model = bf.FusionModel(train, heads=heads, latent_dim=latent_dim)
    model.fit(max_epochs=epochs, seed=fit_seed, progress=False)
    post, tg = _usable(model.predict(pool, num_samples=num_samples, seed=fit_seed), pool)
    trt = train.targets
    trt = trt[trt["time"] > 0]
    km = KaplanMeierCensoring.from_targets(trt)
    tau = default_horizon(trt["time"].to_numpy(float), trt["event"].to_numpy(float), km)
    c0 = choose_cutoff(post, "survival", km, ALPHA, post.n_patients // 2)
    km.check_support(c0, "c0")
    models = {"bayesfuse": bf_predictive(post, c0, tau), "over-confident": bf_predictive(post, c0, tau, SHRINK),
              "CoxPH": cox_predictive(train, pool.subset(ids=np.asarray(post.sample_ids, dtype=object)), c0, tau)}
    log(f"{name}: {len(train_ids)} train ({len(model.history_)} epochs), {post.n_patients} pool, tau {tau:.4g}, "
        f"c0 {c0:.4g}, P(C >= tau) {float(km.at_least(tau)):.2f}, P(C >= c0) {float(km.at_least(c0)):.2f} "
        f"({time.perf_counter() - t0:.0f} s)")
    return {"name": name, "post": post, "targets": tg, "train_targets": trt, "km": km, "tau": tau, "c0": c0,
            "models": models, "model": model, "train": train, "true_t": None, "n_train": len(train_ids),
            "epochs": len(model.history_)}


def _usable(post: bf.Posterior, data: bf.MultiModalData):
    """The patients with a usable outcome (time > 0), and their targets in the posterior's order."""
    tg = data.targets.reindex(post.sample_ids)
    ok = (tg["time"] > 0).to_numpy() & tg["time"].notna().to_numpy()
    return subset_posterior(post, np.asarray(post.sample_ids, dtype=object)[ok]), tg[ok]


@dataclass
class EmpiricalCensoring:
    """``P(C >= t)`` from (nearly) every simulated censoring time: the simulator's true censoring law."""

    times: np.ndarray
    marginal = True

    def at_least(self, t, post=None):
        c = np.sort(self.times)
        return 1.0 - np.searchsorted(c, np.asarray(t, dtype=float), side="left") / len(c)


# ------------------------------------------------------------------------------------------ re-splits
def _plugin_empirical(score, err, sel, r):
    """Lowest threshold whose empirical error among the selected calibration patients <= r (no correction)."""
    s, e = score[sel], err[sel]
    order = np.argsort(-s, kind="stable")
    rate = np.cumsum(e[order]) / np.arange(1, len(s) + 1)
    ok = np.flatnonzero(rate <= r)
    return float(s[order][ok[-1]]) if len(ok) else float("inf")


def _plugin_self(score, r):
    conf = np.sort(score)[::-1]
    ok = np.flatnonzero(np.cumsum(1 - conf) / np.arange(1, len(conf) + 1) <= r)
    return float(conf[ok[-1]]) if len(ok) else float("inf")


BOUND_RULES = {"bayesfuse conformal": ("bayesfuse", True), "CoxPH conformal": ("CoxPH", True),
               "over-confident conformal": ("over-confident", True),
               "over-confident plug-in": ("over-confident", False), "bayesfuse plug-in": ("bayesfuse", False)}


def bound_split(models, t, e, cal, te, c0, km, seed, true_t=None, te_bound=None) -> dict:
    """One split of every lower-bound rule: {rule: (record, bound array)}; selection drawn as SurvivalBound(seed=seed).

    ``te_bound``: test patients the bounds are computed for (default ``te``).
    """
    te_b = te if te_bound is None else te_bound
    sel = select_at_risk(t[cal], e[cal], c0, km, np.random.default_rng([seed, 15]))
    cs = cal[sel]
    out = {}
    for name, (mkey, conformal) in BOUND_RULES.items():
        m = models[mkey]
        if conformal:
            v = np.where(t[cs] >= c0, 1.0, m.cdf_own(np.minimum(t[cs], c0), cs))   # as SurvivalBound.fit
            beta = float(conformal_lower_level(v, np.ones(len(v)), 1.0, ALPHA))
        else:
            beta = ALPHA
        b = np.minimum(m.quantile(beta, te_b), c0)
        rec = bound_coverage(b, t[te_b], e[te_b], ALPHA, c0, km)
        row = {"coverage_known": rec.coverage_known, "coverage_ipcw": rec.coverage_ipcw,
               "coverage_worst": rec.coverage_worst_case, "n_known": rec.n_known, "mean_bound": rec.mean_bound,
               "median_bound": rec.median_bound, "at_cutoff": rec.share_at_cutoff, "beta": beta}
        if true_t is not None:
            row["coverage_true"] = float((true_t[te_b] >= b).mean())
        out[name] = (row, b)
    return out


def abstain_split(models, t, e, cal, te, tau, km, seed, risks, delta, true_t=None) -> dict:
    """One split of every abstention rule: {(rule, r): (record, threshold)}; selection as Abstainer(seed=seed)."""
    known, by = status_at(t, e, tau)
    sel = select_at_risk(t[cal], e[cal], tau, km, np.random.default_rng([seed, 16]))
    w_te = ipcw_weights(t[te], e[te], tau, km)
    out = {}
    for mkey in ("bayesfuse", "CoxPH", "over-confident"):
        high, score = models[mkey].scores()
        err = high != by
        for r in risks:
            rules = {f"{mkey} LTT": None}
            if mkey in ("bayesfuse", "CoxPH"):   # the same procedure from 4 start points (Abstainer(starts=4), the default)
                rules[f"{mkey} LTT{STARTS4}"] = None
            if mkey == "bayesfuse":
                rules["bayesfuse plug-in (empirical risk)"] = _plugin_empirical(score[cal], err[cal], sel, r)
            if mkey == "over-confident":
                rules["over-confident plug-in (self-reported risk)"] = _plugin_self(score[cal], r)
            for rule, thr in rules.items():
                if thr is None:
                    thr = ltt_multi_risk(score[cal], {"s": err[cal]}, {"s": sel}, {"s": r}, delta,
                                         grid=default_grid(2), starts=4 if rule.endswith(STARTS4) else 1).threshold
                acc = score[te] >= thr
                den = float((w_te * acc).sum())
                err_ipcw = float((w_te * acc * err[te]).sum() / den) if den > 0 else float("nan")
                kk = acc & known[te]
                row = {"coverage": float(acc.mean()), "error_ipcw": err_ipcw,
                       "error_known": float(err[te][kk].mean()) if kk.any() else float("nan"),
                       "violation": bool(acc.any() and err_ipcw > r)}
                if true_t is not None:
                    wrong = high[te] != (true_t[te] <= tau)
                    row["error_true"] = float(wrong[acc].mean()) if acc.any() else float("nan")
                    row["violation_true"] = bool(acc.any() and wrong[acc].mean() > r)
                out[(rule, r)] = (row, thr)
    return out


def survival_study(st: dict, n_splits: int, risks: tuple[float, ...], delta: float, split_seed: int = 5000) -> dict:
    """Re-splits of the cohort's pool (calibration / test halves, stratified by event)."""
    post, tg, km, tau, c0 = st["post"], st["targets"], st["km"], st["tau"], st["c0"]
    ids = pd.Index(np.asarray(post.sample_ids, dtype=object))
    t, e = tg["time"].to_numpy(float), tg["event"].to_numpy(float).astype(bool)
    lpb = {k: [] for k in BOUND_RULES}
    abst: dict = {}
    strata = pd.Series(e.astype(int), index=ids)
    for s in range(n_splits):
        split = make_splits(ids, strata, fractions={"calibration": 0.5, "test": 0.5}, seed=split_seed + s)
        cal = np.flatnonzero(split.to_numpy() == "calibration")
        te = np.flatnonzero(split.to_numpy() == "test")
        bounds = bound_split(st["models"], t, e, cal, te, c0, km, s, st["true_t"])
        for name, (row, _) in bounds.items():
            lpb[name].append(row)
        calls = abstain_split(st["models"], t, e, cal, te, tau, km, s, risks, delta, st["true_t"])
        for key, (row, _) in calls.items():
            abst.setdefault(key, []).append(row)
        if s == 0:
            _check_against_classes(post, tg, ids, cal, te, c0, tau, km, delta, risks, bounds, calls)
    return summarise(st["name"] + ": re-splits of the pool", st, lpb, abst, n_splits, delta, len(te))


def _check_against_classes(post, tg, ids, cal, te, c0, tau, km, delta, risks, bounds, calls) -> None:
    """The array rules are bf.SurvivalBound / bf.Abstainer (first split of each cohort)."""
    row, b = bounds["bayesfuse conformal"]
    sb = SurvivalBound(alpha=ALPHA, horizon=c0, seed=0).fit(subset_posterior(post, ids[cal]), tg, "survival",
                                                           censoring=km)
    assert sb.beta_ == row["beta"], (sb.beta_, row["beta"])
    got = sb.predict(subset_posterior(post, ids[te]))["lower_bound"].to_numpy()
    tol = 1e-5 * c0    # float32 draws: the two CDF evaluations differ in the 7th digit
    bad = ~((got >= b - tol) & (got - b <= c0 / (N_GRID - 1) + tol))
    assert not bad.any(), ("grid != class", got[bad][:5], b[bad][:5], row["beta"], c0)
    for r, starts in itertools.product(risks, (1, 4)):
        crow, thr = calls[("bayesfuse LTT" + (STARTS4 if starts == 4 else ""), r)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ab = Abstainer(max_risk=r, delta=delta, seed=0, starts=starts).fit(
                subset_posterior(post, ids[cal]), tg, "survival", horizon=tau, censoring=km)
        assert ab.threshold_ == thr, (ab.threshold_, thr, starts)
        rc = ab.risk_coverage(subset_posterior(post, ids[te]), tg)
        assert rc.coverage == crow["coverage"]
        assert rc.error_ipcw == crow["error_ipcw"] or (np.isnan(rc.error_ipcw) and np.isnan(crow["error_ipcw"]))


def fresh_study(name: str, models: dict, t, e, true_t, c0, tau, censoring, n_splits, risks, delta,
                n_cal: int = 1200, n_bound: int = 4000) -> dict:
    """Simulator: every split draws ``n_cal`` calibration patients from the first ``n - n_bound`` further
    simulated patients; bounds are checked on the last ``n_bound``, calls on every non-calibration patient,
    against the TRUE event times (the population the guarantee is about, not one re-split pool)."""
    lpb = {k: [] for k in BOUND_RULES}
    abst: dict = {}
    n = len(t)
    fixed = np.arange(n - n_bound, n)          # bounds are checked on these (never drawn for calibration)
    for s in range(n_splits):
        cal = np.sort(np.random.default_rng([9000, s]).choice(n - n_bound, size=min(n_cal, n - n_bound),
                                                                 replace=False))
        te = np.setdiff1d(np.arange(n), cal)
        for nm, (row, _) in bound_split(models, t, e, cal, te, c0, censoring, s, true_t, te_bound=fixed).items():
            lpb[nm].append(row)
        for key, (row, _) in abstain_split(models, t, e, cal, te, tau, censoring, s, risks, delta, true_t).items():
            abst.setdefault(key, []).append(row)
    fake = {"name": name, "n_train": 600, "epochs": 0, "post": None, "tau": tau, "c0": c0, "km": censoring,
            "targets": pd.DataFrame({"event": e})}
    return summarise(name, fake, lpb, abst, n_splits, delta, n_bound)


def summarise(label, st, lpb, abst, n_splits, delta, n_test) -> dict:
    allowed = delta + 3 * math.sqrt(delta * (1 - delta) / n_splits)
    rows_b = []
    for name, recs in lpb.items():
        df = pd.DataFrame(recs)
        n_known = float(df["n_known"].mean())
        floor = 1 - ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) / n_known)
        row = {"dataset": label, "method": name, "n_splits": n_splits, "n_test": n_test, "c0": st["c0"],
               "mean_n_known": n_known, "coverage_known": float(df["coverage_known"].mean()),
               "coverage_ipcw": float(df["coverage_ipcw"].mean()),
               "coverage_worst": float(df["coverage_worst"].mean()), "floor (1-alpha-3sd)": floor,
               "valid": bool(df["coverage_known"].mean() >= floor),
               "mean_bound": float(df["mean_bound"].mean()), "median_bound": float(df["median_bound"].mean()),
               "at_cutoff": float(df["at_cutoff"].mean()),
               "share_splits_below_floor": float((df["coverage_known"] < floor).mean())}
        if "coverage_true" in df:
            row["coverage_true"] = float(df["coverage_true"].mean())
            row["valid_true"] = bool(row["coverage_true"] >= 1 - ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) / n_test))
        rows_b.append(row)
    rows_a = []
    for (name, r), recs in abst.items():
        df = pd.DataFrame(recs)
        row = {"dataset": label, "method": name, "max_risk": r, "n_splits": n_splits, "tau": st["tau"],
               "violation_share": float(df["violation"].mean()), "allowed (delta+3sd)": allowed,
               "valid": bool(df["violation"].mean() <= allowed), "mean_coverage": float(df["coverage"].mean()),
               "sd_coverage": float(df["coverage"].std()),
               "coverage_per_split": [float(c) for c in df["coverage"]],
               "mean_error_ipcw": float(df["error_ipcw"].mean()), "mean_error_known": float(df["error_known"].mean()),
               "share_nothing_certified": float((df["coverage"] == 0).mean())}
        if "violation_true" in df:
            row["violation_share_true"] = float(df["violation_true"].mean())
            row["mean_error_true"] = float(df["error_true"].mean())
            row["valid_true"] = bool(row["violation_share_true"] <= allowed)
        rows_a.append(row)
    return {"dataset": label, "n_train": st["n_train"], "epochs": st["epochs"],
            "n_pool": len(st["targets"]),
            "tau": st["tau"], "c0": st["c0"], "censoring_at_tau": float(st["km"].at_least(st["tau"])),
            "censoring_at_c0": float(st["km"].at_least(st["c0"])),
            "event_share_pool": float(st["targets"]["event"].mean()), "bound": rows_b, "abstain": rows_a}


def paired(study: dict) -> list[dict]:
    """bayesfuse vs CoxPH on the same splits: abstainer coverage, bound height."""
    out = []
    by = {(r["method"], r["max_risk"]): r for r in study["abstain"]}
    for (m, r), row in by.items():
        if m not in ("bayesfuse LTT", f"bayesfuse LTT{STARTS4}"):
            continue
        a = np.array(row["coverage_per_split"])
        b = np.array(by[(m.replace("bayesfuse", "CoxPH"), r)]["coverage_per_split"])
        d = a - b
        what = f"abstainer coverage, max_risk {r:g}" + (STARTS4 if m.endswith(STARTS4) else "")
        out.append({"dataset": study["dataset"], "what": what, "bayesfuse": a.mean(),
                    "CoxPH": b.mean(), "mean_diff": d.mean(), "share_better": float((d > 0).mean()),
                    "share_tied": float((d == 0).mean()), "share_worse": float((d < 0).mean())})
    bb = {r["method"]: r for r in study["bound"]}
    out.append({"dataset": study["dataset"], "what": "lower bound: mean height (coverage_known bf / Cox)",
                "bayesfuse": bb["bayesfuse conformal"]["mean_bound"], "CoxPH": bb["CoxPH conformal"]["mean_bound"],
                "mean_diff": bb["bayesfuse conformal"]["mean_bound"] - bb["CoxPH conformal"]["mean_bound"],
                "coverage_bf": bb["bayesfuse conformal"]["coverage_known"],
                "coverage_cox": bb["CoxPH conformal"]["coverage_known"]})
    return out


# ------------------------------------------------------------------------------------------ multi-task
def multi_study(st: dict, n_splits: int, levels: dict, delta: float, split_seed: int = 7000, starts: int = 4) -> list[dict]:
    post, km, tau = st["post"], st["km"], st["tau"]
    tg = st["targets"]
    ids = pd.Index(np.asarray(post.sample_ids, dtype=object))
    e = tg["event"].to_numpy(float).astype(bool)
    true_t = st["true_t"]
    recs = []
    strata = pd.Series(e.astype(int), index=ids)
    for s in range(n_splits):
        split = make_splits(ids, strata, fractions={"calibration": 0.5, "test": 0.5}, seed=split_seed + s)
        cal, te = ids[split.to_numpy() == "calibration"], ids[split.to_numpy() == "test"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            ma = Abstainer(max_risk=levels, delta=delta, seed=s, starts=starts).fit(subset_posterior(post, cal), tg,
                                                                                   horizon=tau, censoring=km)
        tp = subset_posterior(post, te)
        rc = ma.risk_coverage(tp, tg)
        dec = ma.predict(tp)
        v_sub = bool(rc["subtype"].n_accepted and rc["subtype"].error > levels["subtype"])
        v_surv = bool(rc["survival"].n_accepted and rc["survival"].error_ipcw > levels["survival"])
        row = {"coverage": float(dec["accepted"].mean()), "viol_subtype": v_sub, "viol_survival": v_surv,
               "viol_joint": v_sub or v_surv, "err_subtype": rc["subtype"].error,
               "err_survival_ipcw": rc["survival"].error_ipcw}
        if true_t is not None:
            acc = dec["accepted"].to_numpy()
            pos = ids.get_indexer(te)
            wrong = (dec["survival_call"].to_numpy() == "high") != (true_t[pos] <= tau)
            v_true = bool(acc.any() and wrong[acc].mean() > levels["survival"])
            row["viol_survival_true"] = v_true
            row["viol_joint_true"] = v_sub or v_true
        recs.append(row)
    df = pd.DataFrame(recs)
    allowed = delta + 3 * math.sqrt(delta * (1 - delta) / n_splits)
    out = {"dataset": st["name"], "levels": ", ".join(f"{k} {v:g}" for k, v in levels.items()), "starts": starts, "tau": tau,
           "n_splits": n_splits, "mean_coverage": float(df["coverage"].mean()),
           "viol_subtype": float(df["viol_subtype"].mean()), "viol_survival": float(df["viol_survival"].mean()),
           "viol_joint": float(df["viol_joint"].mean()), "allowed (delta+3sd)": allowed,
           "valid": bool(df["viol_joint"].mean() <= allowed),
           "mean_err_subtype": float(df["err_subtype"].mean()),
           "mean_err_survival_ipcw": float(df["err_survival_ipcw"].mean())}
    if "viol_joint_true" in df:
        out["viol_joint_true"] = float(df["viol_joint_true"].mean())
    return [out]


# ------------------------------------------------------------------------------------------ driver
def run(data_root, n_splits: int, epochs: int, num_samples: int, delta: float, quick: bool,
        gbmlgg_leakage: dict, fit_seed: int = 0, cohorts_only: tuple[str, ...] = ()) -> dict:
    """The survival section for one model fit per cohort. ``fit_seed`` 0 is the documented run; another seed
    draws another training half (simulator: another 600 of its first 3,000 patients) and model seed, with
    ", fit seed N" appended to every dataset label. ``cohorts_only``: names to run ("simulator",
    "tcga_gbmlgg", ...), all when empty."""
    t_start = time.perf_counter()
    tag = f", fit seed {fit_seed}" if fit_seed else ""

    def wanted(name: str) -> bool:
        return not cohorts_only or name in cohorts_only

    risks = (0.1, 0.2)
    res = {"survival": [], "survival_paired": [], "multitask": []}
    cohorts = []
    # simulator with known survival (class_separation 4: the subtype head can reach 5% error on confident
    # patients, for the multi-task table): 600 train, 2400 pool; 8,000 further patients for fresh calibration
    # draws checked against their true event times
    n_pop = 2000 if quick else 8000
    if wanted("simulator"):
        data, truth = bf.datasets.simulate(n_patients=3000 + n_pop, missing_rate=0.2, class_separation=4.0, seed=0)
        ids = data.sample_ids
        order = np.sort(np.random.default_rng(fit_seed).permutation(3000)[:600]) if fit_seed else np.arange(600)
        train_ids = ids[order]
        st = setup_cohort("simulator" + tag, data.subset(ids=ids[:3000]),
                          {"subtype": "categorical", "survival": bf.heads.Survival()}, epochs, num_samples,
                          train_ids=train_ids, pool_ids=ids[:3000][~np.isin(np.arange(3000), order)], latent_dim=8,
                          fit_seed=fit_seed)
        st["true_t"] = truth.event_time[pd.Index(ids).get_indexer(st["post"].sample_ids)]
        cohorts.append(st)
        popd = data.subset(ids=ids[3000:])
        pop_post, pop_tg = _usable(st["model"].predict(popd, num_samples=num_samples, seed=1), popd)
        pop_true = truth.event_time[pd.Index(ids).get_indexer(pop_post.sample_ids)]
        pop_models = {"bayesfuse": bf_predictive(pop_post, st["c0"], st["tau"]),
                      "over-confident": bf_predictive(pop_post, st["c0"], st["tau"], SHRINK),
                      "CoxPH": cox_predictive(st["train"], popd.subset(ids=np.asarray(pop_post.sample_ids, dtype=object)),
                                              st["c0"], st["tau"])}
        pt, pe = pop_tg["time"].to_numpy(float), pop_tg["event"].to_numpy(float).astype(bool)
        for label, cens in (("Kaplan-Meier of the 600 training patients", st["km"]),
                            ("true censoring law", EmpiricalCensoring(truth.censor_time))):
            t0 = time.perf_counter()
            study = fresh_study(f"simulator: fresh calibration draws, censoring = {label}{tag}", pop_models, pt, pe,
                                pop_true, st["c0"], st["tau"], cens, n_splits, risks, delta, n_bound=n_pop // 2)
            res["survival"].append(study)
            res["survival_paired"] += paired(study)
            log(f"simulator fresh draws ({label}): {n_splits} splits in {time.perf_counter() - t0:.0f} s")
    real = [("tcga_gbmlgg", gbmlgg_leakage), ("metabric", None), ("support", None), ("whas", None)]
    if quick:
        real = real[:2]
    for name, drop in real:
        if not wanted(name):
            continue
        path = data_root / name
        if not path.is_dir():
            log(f"{name}: not found at {path}; skipped")
            continue
        d = bf.MultiModalData.read_dir(path, drop_features=drop)
        heads = {"survival": bf.heads.Survival(nonpositive_times="drop")}
        if "subtype" in d.targets.columns:
            heads = {"subtype": "categorical", **heads}
        cohorts.append(setup_cohort(name + tag, d, heads, epochs, num_samples, fit_seed=fit_seed))
    for st in cohorts:
        t0 = time.perf_counter()
        study = survival_study(st, n_splits, risks, delta)
        res["survival"].append(study)
        res["survival_paired"] += paired(study)
        if "subtype" in st["post"].heads:
            for starts in (4, 1):   # the default, and plain fixed-sequence testing
                res["multitask"] += multi_study(st, n_splits, {"subtype": 0.05, "survival": 0.2}, delta, starts=starts)
        log(f"{st['name']}: {n_splits} re-splits in {time.perf_counter() - t0:.0f} s")
    res["survival_seconds"] = time.perf_counter() - t_start
    return res


def across_fits(paired_rows: list[dict]) -> list[dict]:
    """Usefulness rows of several fit seeds pooled: per (dataset, what) the mean over fits of bayesfuse,
    CoxPH and their difference, and in how many fits bayesfuse is ahead / level / behind."""
    groups: dict = {}
    for r in paired_rows:
        base = re.sub(r", fit seed \d+", "", r["dataset"])
        groups.setdefault((base, r["what"]), []).append(r)
    out = []
    for (base, what), rows in groups.items():
        d = np.array([r["bayesfuse"] - r["CoxPH"] for r in rows])
        out.append({"dataset": base, "what": what, "n_fits": len(rows),
                    "bayesfuse": float(np.mean([r["bayesfuse"] for r in rows])),
                    "CoxPH": float(np.mean([r["CoxPH"] for r in rows])), "mean_diff": float(d.mean()),
                    "fits_ahead / level / behind": f"{(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()}",
                    "per_fit_diff": " ".join(f"{x:+.4g}" for x in d)})
    return out


def print_tables(res: dict, print_table) -> None:
    rows_b = [r for st in res["survival"] for r in st["bound"]]
    print_table(f"Survival lower bound (alpha = {ALPHA}): coverage over re-splits", rows_b,
                ["dataset", "method", "c0", "mean_n_known", "coverage_known", "coverage_ipcw", "coverage_worst",
                 "floor (1-alpha-3sd)", "valid", "share_splits_below_floor", "mean_bound", "at_cutoff"]
                + (["coverage_true"] if any("coverage_true" in r for r in rows_b) else []))
    rows_a = [r for st in res["survival"] for r in st["abstain"]]
    print_table("Survival abstainer: violation share over re-splits", rows_a,
                ["dataset", "method", "max_risk", "tau", "violation_share", "allowed (delta+3sd)", "valid",
                 "mean_coverage", "mean_error_ipcw", "mean_error_known", "share_nothing_certified"]
                + (["violation_share_true", "mean_error_true"] if any("violation_share_true" in r for r in rows_a)
                   else []))
    print_table("Survival usefulness: bayesfuse vs CoxPH (same splits)", res["survival_paired"],
                ["dataset", "what", "bayesfuse", "CoxPH", "mean_diff"])
    if any(", fit seed " in r["dataset"] for r in res["survival_paired"]):
        print_table("Survival usefulness over model fits (mean over fit seeds)", across_fits(res["survival_paired"]),
                    ["dataset", "what", "n_fits", "bayesfuse", "CoxPH", "mean_diff", "fits_ahead / level / behind",
                     "per_fit_diff"])
    if res["multitask"]:
        print_table("Multi-task abstainer (joint)", res["multitask"],
                    ["dataset", "levels", "starts", "tau", "mean_coverage", "viol_subtype", "viol_survival", "viol_joint",
                     "allowed (delta+3sd)", "valid"])
