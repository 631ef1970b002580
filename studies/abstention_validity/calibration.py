"""Abstention study: calibrated "I don't know" (Abstainer / Learn-then-Test, conformal sets) (was benchmarks/calibration.py).

The release check is benchmarks/calibration.py (simulator population); this study adds the real cohorts,
negative controls, the logistic-regression baseline, unseen classes and survival (docs/studies/calibration.md).

Run:  PYTHONPATH=. python studies/abstention_validity/calibration.py [--quick] [--json benchmarks/results/calibration.json]

Sections (all numbers measured in this run, printed as tables and written to JSON):

1. Validity. On the simulator, tcga_gbmlgg (subtype; IDH1/IDH2 mutations and 1p/19q arms dropped)
   and tcga_rare6 (origin), held-out predictions are re-split >= 100 times into calibration /
   test halves (stratified, patient level). Per split the LTT threshold is certified on the
   calibration half and the error among accepted test patients is measured; the share of splits
   where it exceeds ``max_risk`` must be <= delta (+ binomial slack). Held-out predictions:
   * simulator (class_separation 2.5 = default, and 4.0): one model fitted on 600 simulated
     patients, 2400 fresh patients predicted once;
   * real data, protocol "train/test": one model on the dataset's train split, its test split
     predicted once (small: 113 / 71 patients);
   * real data, protocol "cross-fit": K-fold out-of-fold predictions over the whole cohort (each
     patient predicted by the model that did not see it), so the calibration / test pools are the
     whole cohort. Fold models use fewer epochs (``--cv-epochs``).
   Negative controls in the same run: the same predictions sharpened (p ** 4, renormalised:
   over-confident) with naive plug-in thresholds: (a) the model's own risk estimate
   ``mean(1 - confidence)`` among accepted <= max_risk; (b) the empirical calibration error among
   accepted <= max_risk (no finite-sample correction). LTT on the sharpened probabilities is shown
   too (it must stay valid: LTT does not trust the probabilities).
2. Usefulness: coverage (share accepted) of LTT (plain fixed sequence, ``Abstainer(starts=1)``, and the
   default fallback procedure from up to 4 start points, ``Abstainer(starts=4)``) on bayesfuse vs the same on
   L2 logistic regression
   probabilities (sklearn, standardised concatenated features, log1p CPM for rare6) on the same
   folds and re-splits, as paired differences (mean, sd, share of splits better / tied / worse).
   Real cohorts: ``--crossfit-seeds`` (default 3) independent cross-fits. Simulator: also with the
   head weight chosen on the training patients (``select_head_weight``, 3 inner folds, AURC) and
   the logistic regression's C chosen the same way.
3. Unseen class: tcga_rare6 cross-fitted without one tumour type (each of the six by default);
   those patients are predicted by the fold models; AUROC known vs unseen per score and share
   refused by the Abstainer (confidence + OOD gate: mutual information, latent kNN distance,
   ``LatentMahalanobis``, ``reconstruction_elbo``, and their ``JointScore``; gate quantile 0.95 or
   0.9) and coverage kept on the known types.
4. Conformal sets (alpha = 0.1, LAC and APS): mean test coverage over re-splits vs 1 - alpha and
   mean set size.
5. Survival (studies/abstention_validity/calibration_survival.py; ``--only survival`` runs it alone): SurvivalBound's
   lower-bound coverage, the survival Abstainer's violation share, both on lifelines CoxPH predictions
   too, negative controls, and the multi-task Abstainer, on the simulator, tcga_gbmlgg, metabric,
   support and whas (one model per cohort, its held-out half re-split; see that module).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import binom

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bayesfuse as bf  # noqa: E402
from bayesfuse.calibration import (  # noqa: E402
    Abstainer,
    CalibrationWarning,
    ConformalSets,
    coverage,
    default_grid,
    ltt_fixed_sequence,
    make_splits,
    mutual_information,
    subset_posterior,
)
from bayesfuse.evaluation.tuning import select_head_weight  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))   # also when loaded by path (tests)
import calibration_survival  # noqa: E402

from bayesfuse.model.ood_scores import reconstruction_elbo  # noqa: E402
from bayesfuse.posterior import JointScore, LatentMahalanobis, PatientScores, Posterior  # noqa: E402

warnings.simplefilter("ignore", CalibrationWarning)
warnings.simplefilter("ignore", bf.exceptions.BayesFuseWarning)

DATA_ROOT = Path(os.environ.get("BAYESFUSE_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
GBMLGG_LEAKAGE = {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}
SHARPEN = 4.0  # over-confident control: p ** SHARPEN, renormalised (temperature 1/4)
HEAD_WEIGHTS = (1.0, 3.0, 10.0, 30.0, "auto")  # candidates of select_head_weight (simulator)
LR_CS = (0.01, 0.1, 1.0, 10.0)  # candidates of the logistic-regression C (same inner folds, same criterion)


# ------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def concat_posteriors(posts: list[Posterior]) -> Posterior:
    """Stack Posteriors of disjoint patients (same heads / classes) along the patient axis."""
    p0 = posts[0]
    draws = {h: {k: np.concatenate([p.draws[h][k] for p in posts], axis=1) for k in p0.draws[h]}
             for h in p0.draws}
    return dataclasses.replace(
        p0, sample_ids=np.concatenate([np.asarray(p.sample_ids, dtype=object) for p in posts]), draws=draws,
        latent=np.concatenate([p.latent for p in posts], axis=1),
        latent_loc=np.concatenate([p.latent_loc for p in posts]),
        latent_scale=np.concatenate([p.latent_scale for p in posts]),
        presence=pd.concat([p.presence for p in posts]),
        modality_precision=np.concatenate([p.modality_precision for p in posts]), extra={})


def features(data: bf.MultiModalData, log_cpm: bool) -> pd.DataFrame:
    frames = []
    for m in data.modality_names:
        df = data.modality(m)
        if log_cpm:
            df = np.log1p(df.div(df.sum(axis=1), axis=0) * 1e6)
        frames.append(df.add_prefix(f"{m}:"))
    return pd.concat(frames, axis=1).reindex(data.sample_ids)


def logreg_probs(train: bf.MultiModalData, test: bf.MultiModalData, target: str, classes: list,
                 log_cpm: bool, C: float = 1.0) -> np.ndarray:
    """L2 logistic regression (default C=1) on standardised concatenated features; missing modality -> mean + indicator."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte = features(train, log_cpm), features(test, log_cpm)
    keep = xtr.columns[xtr.std(skipna=True).fillna(0).to_numpy() > 0]
    xtr, xte = xtr[keep], xte.reindex(columns=keep)
    ytr = train.targets[target]
    ok = ytr.notna().to_numpy()
    steps = [SimpleImputer(strategy="mean", add_indicator=True)] if xtr.isna().any().any() or xte.isna().any().any() \
        else []
    clf = make_pipeline(*steps, StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    clf.fit(xtr[ok].to_numpy(), ytr[ok].to_numpy())
    p = clf.predict_proba(xte.to_numpy())
    out = np.zeros((len(xte), len(classes)))
    for j, c in enumerate(clf.classes_):
        out[:, classes.index(c)] = p[:, j]
    return out


def tune_logreg_c(train: bf.MultiModalData, target: str, classes: list, log_cpm: bool, cs=LR_CS, folds: int = 3,
                  seed: int = 0) -> tuple[float, list[dict]]:
    """C of the logistic regression chosen like the head weight: pooled inner-fold AURC on ``train`` only.

    Uses the same stratified folds as ``select_head_weight(train, ..., folds=3, seed=seed)``.
    """
    from bayesfuse.metrics.classification import aurc

    lab = train.targets[target].dropna()
    split = make_splits(lab.index, lab, fractions={f"f{i}": 1 / folds for i in range(folds)}, seed=seed)
    table = []
    for c in cs:
        ps, ys = [], []
        for i in range(folds):
            va = split.index[split.to_numpy() == f"f{i}"]
            tr = split.index[split.to_numpy() != f"f{i}"]
            ps.append(logreg_probs(train.subset(ids=tr), train.subset(ids=va), target, classes, log_cpm, C=c))
            ys.append(pd.Index(classes).get_indexer(train.targets[target].reindex(va).to_numpy()))
        p, y = np.concatenate(ps), np.concatenate(ys)
        table.append({"C": c, "validation_aurc": aurc(p.max(1), p.argmax(1) == y),
                      "validation_error": float((p.argmax(1) != y).mean())})
    best = min(table, key=lambda r: r["validation_aurc"])["C"]
    return float(best), table


def sharpen(p: np.ndarray, power: float = SHARPEN) -> np.ndarray:
    q = np.clip(p, 1e-300, None) ** power
    return q / q.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------ threshold rules
def ltt_threshold(p_cal: np.ndarray, y_cal: np.ndarray, max_risk: float, delta: float, starts: int = 1) -> float:
    """The Abstainer's rule on arrays: LTT on max probability with the default label-free grid."""
    return ltt_fixed_sequence(p_cal.max(1), p_cal.argmax(1) != y_cal, max_risk, delta,
                              grid=default_grid(p_cal.shape[1]), starts=starts).threshold


def plugin_self_threshold(p_cal: np.ndarray, max_risk: float) -> float:
    """Naive: trust the model; lowest threshold whose self-reported risk mean(1 - conf) <= max_risk."""
    conf = np.sort(p_cal.max(1))[::-1]
    self_risk = np.cumsum(1 - conf) / np.arange(1, len(conf) + 1)
    ok = np.flatnonzero(self_risk <= max_risk)
    return float(conf[ok[-1]]) if len(ok) else float("inf")


def plugin_empirical_threshold(p_cal: np.ndarray, y_cal: np.ndarray, max_risk: float) -> float:
    """Naive: lowest threshold whose empirical calibration error among accepted <= max_risk (no correction)."""
    order = np.argsort(-p_cal.max(1), kind="stable")
    conf = p_cal.max(1)[order]
    err = np.cumsum(p_cal.argmax(1)[order] != y_cal[order]) / np.arange(1, len(conf) + 1)
    ok = np.flatnonzero(err <= max_risk)
    return float(conf[ok[-1]]) if len(ok) else float("inf")


def slack(n_splits: int, delta: float, level: float = 0.95) -> float:
    """Upper ``level`` binomial quantile of the violation share when the true rate is delta."""
    return float(binom.ppf(level, n_splits, delta) / n_splits)


# ------------------------------------------------------------------------------------ re-splits
def resplit_study(name: str, post: Posterior, labels: pd.Series, head: str, lr_probs: np.ndarray | None,
                  n_splits: int, max_risks: tuple[float, ...], delta: float, conformal: bool = True,
                  population: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  extra_ltt: dict[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
                  split_seed: int = 1000) -> dict:
    """Validity, usefulness and conformal coverage over random calibration / test re-splits.

    ``population = (bayesfuse probs, logistic-regression probs, labels)`` of a large fresh sample
    (simulator only): the error among accepted of each chosen threshold is also measured there, a
    close estimate of the population risk the guarantee is about (free of test-half noise).
    ``extra_ltt = {name: (probs, population probs or None)}``: further models scored with plain LTT
    on the same splits (e.g. tuned head weight, tuned logistic regression).
    """
    classes = post.classes(head)
    ids = pd.Index(np.asarray(post.sample_ids, dtype=object))
    known = labels.reindex(ids).notna().to_numpy()  # unlabelled patients cannot be scored
    if not known.all():
        post, ids = subset_posterior(post, ids[known]), ids[known]
        lr_probs = lr_probs[known] if lr_probs is not None else None
    y = pd.Index(classes).get_indexer(labels.reindex(ids).to_numpy())
    assert (y >= 0).all(), "labels outside the model's classes"
    p_bf = np.asarray(post.probs(head), dtype=np.float64).mean(0)
    methods = {"bayesfuse LTT": (p_bf, "ltt", "bf"), "bayesfuse LTT, 4 starts": (p_bf, "ltt4", "bf"),
               "over-confident LTT": (sharpen(p_bf), "ltt", "sharp"),
               "over-confident plug-in (self-reported risk)": (sharpen(p_bf), "self", "sharp"),
               "over-confident plug-in (empirical risk)": (sharpen(p_bf), "emp", "sharp"),
               "bayesfuse plug-in (empirical risk)": (p_bf, "emp", "bf")}
    if lr_probs is not None:
        methods["logistic regression LTT"] = (lr_probs, "ltt", "lr")
        methods["logistic regression LTT, 4 starts"] = (lr_probs, "ltt4", "lr")
    pop = None
    if population is not None:
        pp, pl, py = population
        pop = {"bf": pp, "sharp": sharpen(pp), "lr": pl, "y": py}
    for m, (p_m, pop_m) in (extra_ltt or {}).items():
        src = f"extra:{m}"
        methods[m] = (p_m[known] if len(p_m) == len(known) else p_m, "ltt", src)
        if pop is not None and pop_m is not None:
            pop[src] = pop_m
    rec = {(m, r): {"viol": [], "cov": [], "err": [], "pop_viol": [], "pool_viol": []}
           for m in methods for r in max_risks}
    conf_rec = {meth: {"cov": [], "size": []} for meth in ("lac", "aps")}
    checked = False
    lab_series = pd.Series(np.asarray(classes, dtype=object)[y], index=ids)
    for s in range(n_splits):
        split = make_splits(ids, lab_series, fractions={"calibration": 0.5, "test": 0.5}, seed=split_seed + s)
        cal = split.to_numpy() == "calibration"
        te = ~cal
        for r in max_risks:
            for m, (p, rule, src) in methods.items():
                if rule in ("ltt", "ltt4"):
                    thr = ltt_threshold(p[cal], y[cal], r, delta, starts=4 if rule == "ltt4" else 1)
                elif rule == "self":
                    thr = plugin_self_threshold(p[cal], r)
                else:
                    thr = plugin_empirical_threshold(p[cal], y[cal], r)
                acc = p[te].max(1) >= thr
                k = int(acc.sum())
                e = int((p[te][acc].argmax(1) != y[te][acc]).sum())
                d = rec[(m, r)]
                d["viol"].append(k > 0 and e / k > r)
                d["cov"].append(k / te.sum())
                d["err"].append(e / k if k else np.nan)
                if pop is not None and src in pop:
                    pa = pop[src].max(1) >= thr
                    d["pop_viol"].append(bool(pa.any() and (pop[src][pa].argmax(1) != pop["y"][pa]).mean() > r))
                # the pool the re-splits are drawn from is the population of this experiment: the risk of
                # the certified rule on the whole pool is what LTT bounds, free of test-half noise
                pa = p.max(1) >= thr
                d["pool_viol"].append(bool(pa.any() and (p[pa].argmax(1) != y[pa]).mean() > r))
            if not checked:  # the array rule is exactly bf.Abstainer
                cal_ids = ids[cal]
                ab = Abstainer(max_risk=r, delta=delta, starts=1).fit(subset_posterior(post, cal_ids), lab_series,
                                                                       head=head)
                assert ab.threshold_ == ltt_threshold(p_bf[cal], y[cal], r, delta), "array rule != Abstainer"
                ab = Abstainer(max_risk=r, delta=delta, starts=4).fit(subset_posterior(post, cal_ids), lab_series,
                                                                       head=head)
                assert ab.threshold_ == ltt_threshold(p_bf[cal], y[cal], r, delta, 4), "array rule != Abstainer"
        checked = True
        if conformal:
            cp, tp = subset_posterior(post, ids[cal]), subset_posterior(post, ids[te])
            for meth in conf_rec:
                cs = ConformalSets(alpha=0.1, method=meth, seed=s).fit(cp, lab_series, head=head)
                sets = cs.predict(tp)
                conf_rec[meth]["cov"].append(coverage(sets, lab_series))
                conf_rec[meth]["size"].append(float(sets["size"].mean()))
    n_cal = int(round(len(ids) / 2))
    rows = []
    for (m, r), d in rec.items():
        v = np.array(d["viol"])
        rows.append({"dataset": name, "method": m, "max_risk": r, "n_pool": len(ids), "n_splits": n_splits,
                     "violation_share": float(v.mean()), "allowed (delta + slack)": slack(n_splits, delta),
                     "valid": bool(v.mean() <= slack(n_splits, delta)),
                     "population_violation_share": float(np.mean(d["pop_viol"])) if d["pop_viol"] else None,
                     "pool_violation_share": float(np.mean(d["pool_viol"])),
                     "mean_coverage": float(np.mean(d["cov"])), "sd_coverage": float(np.std(d["cov"])),
                     "coverage_per_split": [float(c) for c in d["cov"]],
                     "mean_error_accepted": float(np.nanmean(d["err"])) if np.isfinite(d["err"]).any() else None,
                     "share_nothing_certified": float(np.mean(np.array(d["cov"]) == 0))})
    out = {"dataset": name, "n_pool": len(ids), "n_calibration": n_cal,
           "base_error": float((p_bf.argmax(1) != y).mean()),
           "base_error_logreg": float((lr_probs.argmax(1) != y).mean()) if lr_probs is not None else None,
           "rows": rows}
    if conformal:
        n_te = len(ids) - n_cal
        out["conformal"] = [{"dataset": name, "alpha": 0.1, "method": meth,
                             "mean_coverage": float(np.mean(d["cov"])), "sd_coverage": float(np.std(d["cov"])),
                     "coverage_per_split": [float(c) for c in d["cov"]],
                             "sd_coverage_over_splits": float(np.std(d["cov"])),
                             "binomial_2se_one_split": float(2 * np.sqrt(0.1 * 0.9 / n_te)),
                             "within_binomial_error": bool(abs(np.mean(d["cov"]) - 0.9) <= 2 * np.sqrt(0.09 / n_te)),
                             "mean_set_size": float(np.mean(d["size"]))} for meth, d in conf_rec.items()]
    return out


# ------------------------------------------------------------------------------------ fitting
def fit_predict(train: bf.MultiModalData, test: bf.MultiModalData, target: str, epochs: int, seed: int,
                num_samples: int, latent_dim: int = 16, **kw):
    model = bf.FusionModel(train, heads={target: "categorical"}, latent_dim=latent_dim, **kw)
    model.fit(max_epochs=epochs, seed=seed, progress=False)
    return model, model.predict(test, num_samples=num_samples, seed=seed)


def crossfit(data: bf.MultiModalData, target: str, k: int, epochs: int, seed: int, num_samples: int,
             log_cpm: bool, extra: bf.MultiModalData | None = None, with_lr: bool = True):
    """K-fold out-of-fold posteriors (and logistic-regression probabilities) for every labelled patient.

    ``extra`` patients (e.g. an unseen class) are split into the same K folds and predicted by the fold
    model that excludes their fold (none of the fold models sees them).
    """
    lab = data.targets[target].dropna()
    folds = make_splits(lab.index, lab, fractions={f"f{i}": 1 / k for i in range(k)}, seed=seed)
    extra_folds = None
    if extra is not None:
        extra_folds = make_splits(extra.sample_ids, None, fractions={f"f{i}": 1 / k for i in range(k)}, seed=seed)
    posts, extra_posts, lr, lr_ids, secs, latents, mahas = [], [], [], [], 0.0, {}, {}
    elbo_of, joints = {}, {}
    for i in range(k):
        test_ids = folds.index[folds.to_numpy() == f"f{i}"]
        train_ids = folds.index[folds.to_numpy() != f"f{i}"]
        train, test = data.subset(ids=train_ids), data.subset(ids=test_ids)
        t0 = time.perf_counter()
        model, post = fit_predict(train, test, target, epochs, seed + i, num_samples)
        secs += time.perf_counter() - t0
        posts.append(post)
        tr_post = model.predict(train, num_samples=1, seed=seed)
        latents[i] = tr_post.latent_loc
        mahas[i] = LatentMahalanobis.from_posterior(tr_post, train.targets[target])  # fold model's own training latents
        if extra is not None:  # input-space score and the joint gate, references = the fold's training patients
            tr_elbo = reconstruction_elbo(model, train)
            elbo_of.update(dict(zip(test.sample_ids, reconstruction_elbo(model, test))))
            ex_ids_i = extra_folds.index[extra_folds.to_numpy() == f"f{i}"]
            elbo_of.update(dict(zip(ex_ids_i, reconstruction_elbo(model, extra.subset(ids=ex_ids_i)))))
            joints[i] = (tr_elbo, mahas[i](tr_post))
        post.extra["fold"] = i
        if extra is not None:
            ex_ids = extra_folds.index[extra_folds.to_numpy() == f"f{i}"]
            extra_posts.append(model.predict(extra.subset(ids=ex_ids), num_samples=num_samples, seed=seed))
        if with_lr:
            lr.append(logreg_probs(train, test, target, post.classes(target), log_cpm))
            lr_ids.append(test_ids)
        log(f"  fold {i + 1}/{k}: {len(train_ids)} train / {len(test_ids)} held out, "
            f"{len(model.history_)} epochs")
    # latent kNN distance to the fold model's own training patients (a label-free OOD score)
    knn, maha, joint_of = {}, {}, {}
    for i, post in enumerate(posts + extra_posts):
        fold = i if i < k else i - k
        ref = latents[fold]
        d = np.sqrt(((post.latent_loc[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
        knn.update(dict(zip(post.sample_ids, np.sort(d, axis=1)[:, :5].mean(1))))
        maha.update(dict(zip(post.sample_ids, mahas[fold](post))))
        if fold in joints:
            elbo_gate = PatientScores(pd.Series(elbo_of), name="-ELBO per feature")
            joint = JointScore([mahas[fold], elbo_gate], [joints[fold][1], joints[fold][0]])
            joint_of.update(dict(zip(post.sample_ids, joint(post))))
    oof = concat_posteriors(posts)
    ex = concat_posteriors(extra_posts) if extra_posts else None
    lr_probs = None
    if with_lr:
        order = pd.Index(np.concatenate([np.asarray(x, dtype=object) for x in lr_ids]))
        lr_probs = np.concatenate(lr)[order.get_indexer(oof.sample_ids)]
    scores = {"latent kNN distance": pd.Series(knn), "latent Mahalanobis": pd.Series(maha)}
    if joint_of:
        scores["-ELBO per feature"] = pd.Series(elbo_of)
        scores["joint (Mahalanobis, -ELBO)"] = pd.Series(joint_of)
    return oof, ex, lr_probs, secs, scores


# ----------------------------------------------------------------------------------- unseen class
def unseen_study(data: bf.MultiModalData, target: str, held: str, k: int, epochs: int, seed: int,
                 num_samples: int, n_splits: int, max_risk: float, delta: float) -> list[dict]:
    lab = data.targets[target]
    known = data.subset(ids=lab.index[(lab != held).to_numpy() & lab.notna().to_numpy()])
    unseen = data.subset(ids=lab.index[(lab == held).to_numpy()])
    oof, ex, _, secs, scores = crossfit(known, target, k, epochs, seed, num_samples, log_cpm=True, extra=unseen,
                                        with_lr=False)
    y_known = known.targets[target]
    ids = pd.Index(np.asarray(oof.sample_ids, dtype=object))
    gate_fns = {name: PatientScores(sc, name=name) for name, sc in scores.items()}
    # label-free separation of the unseen type from the known out-of-fold patients, per score
    from sklearn.metrics import roc_auc_score

    ood_lab = np.r_[np.zeros(oof.n_patients), np.ones(ex.n_patients)]
    auroc = {"1 - max probability": roc_auc_score(ood_lab, -np.r_[oof.probs(target).mean(0).max(1),
                                                                  ex.probs(target).mean(0).max(1)]),
             "mutual_info": roc_auc_score(ood_lab, np.r_[mutual_information(oof, target),
                                                         mutual_information(ex, target)])}
    for name, fn in gate_fns.items():
        auroc[name] = roc_auc_score(ood_lab, np.r_[fn(oof, target), fn(ex, target)])

    gates = {("none (confidence only)", None): None}
    for q in (0.95, 0.9):
        gates[("mutual_info", q)] = "mutual_info"
        for name, fn in gate_fns.items():
            gates[(name, q)] = fn
    res = {g: {"refused_unseen": [], "coverage_known": [], "err_known": [], "refused_by_gate": []} for g in gates}
    for s in range(n_splits):
        split = make_splits(ids, y_known.reindex(ids), fractions={"calibration": 0.5, "test": 0.5}, seed=2000 + s)
        cal_ids, te_ids = ids[split.to_numpy() == "calibration"], ids[split.to_numpy() == "test"]
        cp, tp = subset_posterior(oof, cal_ids), subset_posterior(oof, te_ids)
        for g, score in gates.items():
            ab = Abstainer(max_risk=max_risk, delta=delta, starts=1, ood_score=score,
                           ood_quantile=g[1] or 0.95).fit(cp, y_known, head=target)
            du = ab.predict(ex)
            rc = ab.risk_coverage(tp, y_known)
            res[g]["refused_unseen"].append(float((~du["accepted"]).mean()))
            res[g]["refused_by_gate"].append(float((du["reason"] == "out of distribution").mean()))
            res[g]["coverage_known"].append(rc.coverage)
            res[g]["err_known"].append(rc.error)
    rows = []
    for g, d in res.items():
        rows.append({"held_out_class": held, "n_unseen": unseen.n_samples, "n_known_pool": len(ids),
                     "gate": g[0], "ood_quantile": g[1], "n_splits": n_splits, "max_risk": max_risk,
                     "auroc_known_vs_unseen": auroc.get(g[0], auroc["1 - max probability"]),
                     "refused_unseen": float(np.mean(d["refused_unseen"])),
                     "sd_refused_unseen": float(np.std(d["refused_unseen"])),
                     "refused_unseen_min": float(np.min(d["refused_unseen"])),
                     "refused_by_gate": float(np.mean(d["refused_by_gate"])),
                     "coverage_known": float(np.mean(d["coverage_known"])),
                     "sd_coverage_known": float(np.std(d["coverage_known"])),
                     "error_known_accepted": float(np.nanmean(d["err_known"])),
                     "fit_seconds": secs})
    return rows


# ------------------------------------------------------------------------------ paired usefulness
PAIRS = (("bayesfuse LTT", "logistic regression LTT"),
         ("bayesfuse LTT, head weight tuned", "logistic regression LTT"),
         ("bayesfuse LTT, head weight tuned", "logistic regression LTT, C tuned"),
         ("bayesfuse LTT, 4 starts", "logistic regression LTT, 4 starts"))


def paired_usefulness(studies: list[dict]) -> list[dict]:
    """Coverage of two methods on the same re-splits: mean, sd, paired difference, wins / ties / losses.

    Studies that differ only by cross-fit seed (", seed j") are pooled; the per-seed mean differences
    show the between-cross-fit (model) variation that re-splits of one pool do not.
    """
    groups: dict[tuple, dict] = {}
    for st in studies:
        base = st["dataset"].split(", seed ")[0]
        by = {(r["method"], r["max_risk"]): r for r in st["rows"]}
        for a, b in PAIRS:
            for (m, r), ra in by.items():
                if m != a or (b, r) not in by:
                    continue
                g = groups.setdefault((base, r, a, b), {"a": [], "b": [], "seed_diff": []})
                ca, cb = np.array(ra["coverage_per_split"]), np.array(by[(b, r)]["coverage_per_split"])
                g["a"].append(ca)
                g["b"].append(cb)
                g["seed_diff"].append(float((ca - cb).mean()))
    rows = []
    for (base, r, a, b), g in groups.items():
        ca, cb = np.concatenate(g["a"]), np.concatenate(g["b"])
        d = ca - cb
        rows.append({"dataset": base, "max_risk": r, "method": a, "baseline": b, "n_splits": len(d),
                     "n_crossfits": len(g["seed_diff"]), "coverage": float(ca.mean()), "sd": float(ca.std()),
                     "baseline_coverage": float(cb.mean()), "baseline_sd": float(cb.std()),
                     "mean_diff": float(d.mean()), "sd_diff": float(d.std()),
                     "share_better": float((d > 0).mean()), "share_tied": float((d == 0).mean()),
                     "share_worse": float((d < 0).mean()),
                     "per_crossfit_mean_diff": " ".join(f"{x:+.4f}" for x in g["seed_diff"])})
    return rows


# --------------------------------------------------------------------------------------- main
def print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    df = pd.DataFrame(rows)[cols]
    print(f"\n== {title} ==")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few splits, epochs and datasets")
    ap.add_argument("--n-splits", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=300, help="max epochs of the train/test models")
    ap.add_argument("--cv-epochs", type=int, default=150, help="max epochs of the cross-fitted fold models")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--unseen-folds", type=int, default=3)
    ap.add_argument("--unseen", default="ACC,CHOL,DLBC,KICH,UCS,UVM", help="rare6 classes to hold out, comma-separated")
    ap.add_argument("--crossfit-seeds", type=int, default=3,
                    help="independent cross-fits (fold assignment + model seeds) per real dataset")
    ap.add_argument("--num-samples", type=int, default=100)
    ap.add_argument("--max-risk", type=float, default=0.05)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--json", default="benchmarks/results/calibration.json")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: simulator, real, unseen, survival")
    ap.add_argument("--only", default="", help="comma-separated sections to run (the others are skipped)")
    ap.add_argument("--fit-seeds", type=int, nargs="+", default=[0],
                    help="survival section: one model fit per cohort and seed (training half and model seed)")
    ap.add_argument("--cohorts", default="", help="survival section: comma-separated cohorts (default: all)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_splits, args.epochs, args.cv_epochs, args.folds, args.unseen = 20, 30, 30, 2, "CHOL"
        args.crossfit_seeds = 1
    t_start = time.perf_counter()
    delta, r0 = args.delta, args.max_risk
    risks_real = (r0, 0.02)  # real cohorts have base error < 5%: 0.02 makes the selection matter
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": "2-core CPU, shared", "args": vars(args),
                     "studies": [], "unseen": [], "tuning": []}

    # ---- simulator: default class separation (Bayes error ~20%) and an easier one
    n_pop = 2000 if args.quick else 20000
    skip = {x for x in args.skip.split(",") if x}
    if args.only:
        skip |= {"simulator", "real", "unseen", "survival"} - {x for x in args.only.split(",") if x}
    for sep in (() if "simulator" in skip else (2.5, 4.0)):
        log(f"simulator (class_separation={sep}): fit on 600, predict 2400 fresh patients (+{n_pop} 'population')")
        data, _ = bf.datasets.simulate(n_patients=3000 + n_pop, missing_rate=0.2, class_separation=sep, seed=0)
        ids = data.sample_ids
        train, test = data.subset(ids=ids[:600]), data.subset(ids=ids[600:3000])
        popd = data.subset(ids=ids[3000:])
        model, post = fit_predict(train, test, "subtype", args.epochs, 0, args.num_samples, latent_dim=8)
        classes = post.classes("subtype")
        lr = logreg_probs(train, test, "subtype", classes, log_cpm=False)
        p_pop = model.predict(popd, num_samples=args.num_samples, seed=1).probs("subtype").mean(0).astype(float)
        lr_pop = logreg_probs(train, popd, "subtype", classes, log_cpm=False)
        y_pop = pd.Index(classes).get_indexer(popd.targets["subtype"].to_numpy())
        # head weight and logistic-regression C chosen on the 600 training patients only (3 inner folds, AURC)
        t0 = time.perf_counter()
        sel = select_head_weight(train, "subtype", weights=HEAD_WEIGHTS, criterion="aurc", folds=3, seed=0,
                                 model_kwargs={"latent_dim": 8}, fit_kwargs={"max_epochs": args.epochs},
                                 num_samples=50)
        m_t = sel.refit()
        p_t = m_t.predict(test, num_samples=args.num_samples, seed=0).probs("subtype").mean(0).astype(float)
        p_t_pop = m_t.predict(popd, num_samples=args.num_samples, seed=1).probs("subtype").mean(0).astype(float)
        c_best, c_table = tune_logreg_c(train, "subtype", classes, log_cpm=False)
        lr_t = logreg_probs(train, test, "subtype", classes, log_cpm=False, C=c_best)
        lr_t_pop = logreg_probs(train, popd, "subtype", classes, log_cpm=False, C=c_best)
        log(f"  head weight chosen {sel.best_weight} ({time.perf_counter() - t0:.0f} s), logreg C chosen {c_best}")
        results["tuning"].append({"dataset": f"simulator sep={sep}", "head_weight": str(sel.best_weight),
                                  "head_weight_table": sel.table.to_dict("records"), "logreg_C": c_best,
                                  "logreg_table": c_table})
        st = resplit_study(f"simulator sep={sep} (600 train / 2400 held out)", post, test.targets["subtype"],
                           "subtype", lr, args.n_splits, (r0, 0.1), delta, population=(p_pop, lr_pop, y_pop),
                           extra_ltt={"bayesfuse LTT, head weight tuned": (p_t, p_t_pop),
                                      "logistic regression LTT, C tuned": (lr_t, lr_t_pop)})
        results["studies"].append(st)
        log(f"simulator done ({time.perf_counter() - t_start:.0f} s)")
        if args.quick:
            break

    real = [("tcga_gbmlgg", "subtype", False, GBMLGG_LEAKAGE), ("tcga_rare6", "origin", True, None)]
    if "real" in skip:  # still read rare6 for the unseen-class study
        real = [r for r in real if r[0] == "tcga_rare6"] if "unseen" not in skip else []
    elif args.quick:
        real = real[:1]
    rare6 = None
    for name, target, log_cpm, drop in real:
        path = DATA_ROOT / name
        if not path.is_dir():
            log(f"{name}: not found at {path}; skipped")
            continue
        t0 = time.perf_counter()
        data = bf.MultiModalData.read_dir(path, drop_features=drop)
        if name == "tcga_rare6":
            rare6 = data
        if "real" in skip:
            continue
        log(f"{name}: read in {time.perf_counter() - t0:.0f} s; protocol train/test")
        train, test = data.subset(split="train"), data.subset(split="test")
        _, post = fit_predict(train, test, target, args.epochs, 0, args.num_samples)
        lr = logreg_probs(train, test, target, post.classes(target), log_cpm)
        st = resplit_study(f"{name} {target}: train/test", post, test.targets[target], target, lr,
                           args.n_splits, risks_real, delta)
        results["studies"].append(st)
        log(f"{name}: protocol cross-fit ({args.folds} folds, <= {args.cv_epochs} epochs)")
        for cs in range(args.crossfit_seeds):
            oof, _, lr_oof, secs, _ = crossfit(data, target, args.folds, args.cv_epochs, 100 * cs,
                                                  args.num_samples, log_cpm)
            st = resplit_study(f"{name} {target}: cross-fit {args.folds}-fold, seed {cs}", oof, data.targets[target],
                               target, lr_oof, args.n_splits, risks_real, delta, split_seed=1000 + 10000 * cs)
            st["crossfit_seed"] = cs
            results["studies"].append(st)
        log(f"{name} done ({time.perf_counter() - t_start:.0f} s)")

    if rare6 is not None and "unseen" not in skip:
        for held in [c for c in args.unseen.split(",") if c]:
            log(f"rare6 unseen class {held}: {args.unseen_folds}-fold cross-fit without it")
            results["unseen"] += unseen_study(rare6, "origin", held, args.unseen_folds, args.cv_epochs, 0,
                                              args.num_samples, max(20, args.n_splits // 2), r0, delta)
            log(f"unseen {held} done ({time.perf_counter() - t_start:.0f} s)")

    if "survival" not in skip:
        log("survival: lower bound, survival abstainer, multi-task (one model per cohort)")
        surv: dict = {"survival": [], "survival_paired": [], "multitask": [], "survival_seconds": 0.0}
        for fs in args.fit_seeds:   # one model per cohort and fit seed; lists concatenated, seconds summed
            part = calibration_survival.run(DATA_ROOT, args.n_splits, args.epochs, args.num_samples, delta, args.quick,
                                            GBMLGG_LEAKAGE, fit_seed=fs,
                                            cohorts_only=tuple(c for c in args.cohorts.split(",") if c))
            for k in surv:
                surv[k] += part[k]
        results.update(surv)
        log(f"survival done ({results['survival_seconds']:.0f} s)")
    results["seconds"] = time.perf_counter() - t_start
    if "survival" in results:
        calibration_survival.print_tables(results, print_table)
    rows = [r for st in results["studies"] for r in st["rows"]]
    if not rows:   # e.g. --only survival
        return _write(results, args.json)
    print_table("Validity and coverage over calibration/test re-splits", rows,
                ["dataset", "method", "max_risk", "n_pool", "violation_share", "allowed (delta + slack)", "valid",
                 "population_violation_share", "pool_violation_share", "mean_coverage", "mean_error_accepted"])
    print_table("Base error (no abstention)", results["studies"], ["dataset", "n_pool", "base_error",
                                                                    "base_error_logreg"])
    conf = [c for st in results["studies"] for c in st.get("conformal", [])]
    print_table("Conformal sets, alpha = 0.1", conf, ["dataset", "method", "mean_coverage",
                                                      "binomial_2se_one_split", "within_binomial_error",
                                                      "mean_set_size"])
    results["paired"] = paired_usefulness(results["studies"])
    print_table("Usefulness: coverage on the same re-splits (paired)", results["paired"],
                ["dataset", "max_risk", "method", "baseline", "n_splits", "n_crossfits", "coverage", "sd",
                 "baseline_coverage", "baseline_sd", "mean_diff", "sd_diff", "share_better", "share_tied",
                 "share_worse", "per_crossfit_mean_diff"])
    if results["tuning"]:
        for t in results["tuning"]:
            print(f"\n{t['dataset']}: head weight chosen {t['head_weight']}, logreg C chosen {t['logreg_C']}")
            print(pd.DataFrame(t["head_weight_table"]).to_string(index=False))
            print(pd.DataFrame(t["logreg_table"]).to_string(index=False))
    if results["unseen"]:
        print_table("Unseen class (tcga_rare6)", results["unseen"],
                    ["held_out_class", "n_unseen", "gate", "ood_quantile", "auroc_known_vs_unseen", "refused_unseen",
                     "sd_refused_unseen", "refused_unseen_min", "refused_by_gate", "coverage_known",
                     "sd_coverage_known", "error_known_accepted"])
    return _write(results, args.json)


def _write(results: dict, path: str) -> int:
    print(f"\ntotal {results['seconds']:.0f} s")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
