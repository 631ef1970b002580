"""Harness shared by the benchmark scripts: cohort loading, baseline features, the baselines (L2 logistic
regression, random forest, lifelines CoxPH, scikit-survival RSF), the metrics every script reports the same
way, thread setup, fresh-process workers and peak-RSS measurement (Linux /proc; no psutil needed)."""

import contextlib
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BAYESFUSE_SHARED_DATA", REPO / ".." / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
#: columns that reveal the label (the cohorts' READMEs): dropped for the classification tasks
LEAKAGE = {"tcga_gbmlgg": {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}, "cll": {"mutations": ["IGHV"]}}
COX_PENALTIES = (0.01, 0.1, 1.0, 10.0)
#: the CoxPH baseline keeps at most this many features, the highest training variance (lifelines' Newton steps on
#: 7,399 genes take minutes per fit; 1,000 take about 6 s)
COX_MAX_FEATURES = 1000
#: the penalty grid when there are more features than training patients (the small penalties of
#: :data:`COX_PENALTIES` leave the fit nearly unpenalised there: minutes of Newton steps, never chosen)
COX_PENALTIES_WIDE = (1.0, 10.0, 100.0)


def quiet(threads: int = 1) -> None:
    """``threads`` torch / BLAS threads (the shared machine) and no warnings."""
    import warnings

    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):   # threadpoolctl is optional
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    warnings.filterwarnings("ignore")


def run_child(script, *args, env: dict | None = None):
    """``python script *args`` in a fresh process: ``(its last stdout line as JSON or None on failure,
    process)``."""
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True,
                          text=True)
    return (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None), proc


def step_times(step, n: int, warmup: int = 0, sync=None) -> list[float]:
    """Seconds of each of ``n`` calls of ``step()`` after ``warmup`` untimed ones; ``sync()`` (a device
    synchronisation) before and after each."""
    sync, times = sync or (lambda: None), []
    for _ in range(warmup + n):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return times[warmup:]


def rss_mib(peak: bool = False) -> float:
    """Resident set size (``peak``: its peak since start or the last :func:`reset_peak`), MiB."""
    key = "VmHWM:" if peak else "VmRSS:"
    with open("/proc/self/status") as fh:
        return next((int(ln.split()[1]) / 1024.0 for ln in fh if ln.startswith(key)), float("nan"))


def reset_peak(collect: bool = False) -> tuple[float, bool]:
    """``(current RSS, reset?)``: the kernel's peak-RSS counter reset (``echo 5 > /proc/self/clear_refs``;
    False if refused), after a garbage collection when ``collect``."""
    if collect:
        __import__("gc").collect()
    base = rss_mib()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return base, True
    except OSError:
        return base, False


def read_cached(path: Path, drop_features: dict | None = None, cache_dir: Path | None = None):
    """``MultiModalData.read_dir`` with a pickle cache (git-ignored) keyed by the folder's file mtimes and
    sizes."""
    import bayesfuse as bf

    cache_dir = Path(cache_dir or RESULTS / "cache")
    stamp = "-".join(f"{f.name}:{f.stat().st_mtime_ns}:{f.stat().st_size}" for f in sorted(path.iterdir()))
    key = int.from_bytes(hashlib.sha1(f"{path.resolve()}|{stamp}".encode()).digest()[:6], "big")
    cached = cache_dir / f"{path.name}-{key:x}.pkl"
    if cached.exists():
        data = pickle.loads(cached.read_bytes())
    else:
        data = bf.MultiModalData.read_dir(path)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return data.drop_features(drop_features) if drop_features else data


def write_json(doc, path: Path | str) -> None:
    """Atomic JSON write (an interrupted run keeps the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float, allow_nan=True))
    os.replace(tmp, path)


def concat(data, counts: tuple = ()) -> pd.DataFrame:
    """Modalities side by side (``"<modality>:<feature>"`` columns, NaN where absent); counts as log1p-CPM."""
    frames = []
    for m in data.modality_names:
        df = data.modality(m)
        if m in counts:
            df = np.log1p(df.div(df.sum(axis=1), axis=0) * 1e6)
        frames.append(df.add_prefix(f"{m}:"))
    return pd.concat(frames, axis=1).reindex(data.sample_ids)


def baseline_features(train, test, counts: tuple = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``concat`` of train and test, absent blocks and missing cells imputed by the training mean."""
    xtr = concat(train, counts)
    xte = concat(test, counts).reindex(columns=xtr.columns)
    a, b = xtr.to_numpy(np.float64), xte.to_numpy(np.float64)
    mu = np.nan_to_num(np.nanmean(np.where(np.isnan(a).all(0), 0.0, a), axis=0))
    # numpy, not DataFrame.fillna(Series): pandas fills column by column (minutes for 56k genes)
    a, b = np.where(np.isnan(a), mu, a), np.where(np.isnan(b), mu, b)
    return (pd.DataFrame(a, index=xtr.index, columns=xtr.columns),
            pd.DataFrame(b, index=xte.index, columns=xtr.columns))


def class_metrics(probs: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, macro-F1, NLL, Brier, top-label ECE (15 bins) and its consistency-resampling p-value."""
    from bayesfuse.metrics import classification_metrics, ece_consistency

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    c = ece_consistency(probs, y, seed=0)
    return {**classification_metrics(probs, y).__dict__, "ece_p": c.p_value, "ece_null_mean": c.null_mean}


def sklearn_classifier(name: str, xtr, ytr, xte, yte, seed: int = 0) -> dict:
    """``"LR"`` (L2, C=1, standardised) or ``"RF"`` (500 trees) fitted on the labelled training rows; test
    metrics."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from bayesfuse.metrics import encode_labels

    ktr, kte = ytr.notna().to_numpy(), yte.notna().to_numpy()
    a, b = xtr.to_numpy()[ktr], xte.to_numpy()[kte]
    t0 = time.perf_counter()
    if name == "LR":
        sc = StandardScaler().fit(a)
        a, b = sc.transform(a), sc.transform(b)
        clf = LogisticRegression(C=1.0, max_iter=5000)
    else:
        clf = RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=1)
    clf.fit(a, ytr[ktr].astype(str).to_numpy())
    fit_s = time.perf_counter() - t0
    y = encode_labels(yte[kte].astype(str).to_numpy(), list(clf.classes_))
    return {**class_metrics(clf.predict_proba(b), y), "fit_s": fit_s}


def bayesfuse_classification(train, test, target: str, seed: int, model_kwargs: dict | None = None,
                             fit_kwargs: dict | None = None, head_kwargs: dict | None = None,
                             num_samples: int = 200) -> dict:
    """Fit bayesfuse, predict the test split, score the posterior-mean probabilities (plus fit / predict
    seconds)."""
    import bayesfuse as bf
    from bayesfuse.evaluation.classification import aligned_labels

    head = bf.heads.Categorical(**head_kwargs) if head_kwargs else "categorical"
    model = bf.FusionModel(train, heads={target: head}, **(model_kwargs or {}))
    t0 = time.perf_counter()
    model.fit(seed=seed, progress=False, **(fit_kwargs or {}))
    fit_s = time.perf_counter() - t0
    post = model.predict(test, num_samples=num_samples, seed=seed)
    rows, y = aligned_labels(post, test.targets[target], target)
    return {**class_metrics(post.probs(target).mean(axis=0)[rows], y), "fit_s": fit_s,
            "predict_s": time.perf_counter() - t0 - fit_s, "epochs": int(len(model.history_)),
            "latent_dim": int(model.latent_dim)}


def eval_setup(train, test):
    """``(test_eval, t, e, tr_ok, tr_t, tr_e, grid)``: the test patients with a time > 0, their times /
    events, the training mask of times > 0 and those times / events (IPCW; baselines train on them), and the
    IBS grid (25 quantiles 10-90% of test event times, inside both follow-ups)."""
    t, e = test.targets["time"].to_numpy(float), test.targets["event"].to_numpy(float).astype(bool)
    ok = t > 0
    test_eval, t, e = test.subset(ids=test.sample_ids[ok]), t[ok], e[ok]
    tr = train.targets
    tr_ok = tr["time"].to_numpy(float) > 0
    tr_t, tr_e = tr["time"].to_numpy(float)[tr_ok], tr["event"].to_numpy(float)[tr_ok].astype(bool)
    grid = np.quantile(t[e] if e.sum() > 10 else t, np.linspace(0.1, 0.9, 25))
    grid = np.unique(grid[(grid < min(t.max(), tr_t.max())) & (grid > 0)])
    return test_eval, t, e, tr_ok, tr_t, tr_e, grid


def metrics(tr_t, tr_e, t, e, risk, surv_grid, grid, s_own) -> dict:
    """Harrell C, Uno C (tau = last grid time), IBS over the grid inside the test follow-up, D-calibration
    p."""
    from bayesfuse.metrics import concordance_harrell, concordance_uno, d_calibration, integrated_brier_score

    inside = (grid >= t.min()) & (grid < t.max())
    return {"harrell_c": concordance_harrell(t, e, risk),
            "uno_c": concordance_uno(tr_t, tr_e, t, e, risk, tau=float(grid.max())),
            "ibs": integrated_brier_score(tr_t, tr_e, t, e, surv_grid[:, inside], grid[inside]),
            "dcal_p": d_calibration(s_own, e).p_value}


def post_outputs(post, grid, t, head: str = "survival"):
    """(surv_draws (S, n, T), risk (n,) = -posterior-mean RMST up to max(grid), exact mean S_i(t_i) (n,))."""
    from bayesfuse.evaluation.survival_selection import own_time_survival

    risk = -post.restricted_mean_survival(head, float(grid.max())).mean(0)
    return post.survival_function(head, grid), risk, own_time_survival(post, head, t)


def run_cox(xtr, xte, tr_t, tr_e, grid, t, seed: int = 0, folds: int = 3):
    """lifelines CoxPH on standardised features, the L2 penalty of :data:`COX_PENALTIES` with the best
    ``folds``-fold inner-CV Harrell C on the training data (ties: the larger), on at most :data:`COX_MAX_FEATURES`
    features (the highest training variance); :data:`COX_PENALTIES_WIDE` when they outnumber the patients. Returns ``risk, surv (n, T),
    s_own (n,), penalty``."""
    from lifelines import CoxPHFitter
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from bayesfuse.metrics import concordance_harrell

    sd = xtr.std(axis=0).to_numpy()
    keep = sd > 0
    if keep.sum() > COX_MAX_FEATURES:
        keep = sd >= np.sort(sd[keep])[-COX_MAX_FEATURES]
    sc = StandardScaler().fit(xtr.loc[:, keep])
    cols = [f"f{i}" for i in range(int(keep.sum()))]
    a = pd.DataFrame(sc.transform(xtr.loc[:, keep]), columns=cols)
    b = pd.DataFrame(sc.transform(xte.loc[:, keep]), columns=cols)

    def fit(frame, tt, ee, pen):
        return CoxPHFitter(penalizer=pen).fit(frame.assign(T=tt, E=ee.astype(int)), "T", "E")

    penalties = COX_PENALTIES_WIDE if a.shape[1] > a.shape[0] else COX_PENALTIES
    scores = {}
    for pen in penalties:
        cs = []
        for itr, iva in StratifiedKFold(folds, shuffle=True, random_state=seed).split(a, tr_e.astype(int)):
            try:
                m = fit(a.iloc[itr].reset_index(drop=True), tr_t[itr], tr_e[itr], pen)
                cs.append(concordance_harrell(tr_t[iva], tr_e[iva], m.predict_partial_hazard(a.iloc[iva]).to_numpy()))
            except Exception:  # noqa: BLE001  (lifelines convergence failure or a fold without events)
                cs.append(np.nan)
        scores[pen] = np.nanmean(cs) if np.isfinite(cs).any() else -np.inf
    for pen in sorted(penalties, key=lambda p: (-scores[p], -p)):
        try:
            cph = fit(a, tr_t, tr_e, pen)
            break
        except Exception:  # noqa: BLE001
            continue
    risk = cph.predict_partial_hazard(b).to_numpy()
    surv = cph.predict_survival_function(b, times=grid).to_numpy().T
    # S_i(t_i): one call on all patients' own times (rows: times, columns: patients), then the diagonal
    s_own = np.diag(cph.predict_survival_function(b, times=t).to_numpy()).copy()
    return risk, surv, s_own, pen


def run_rsf(xtr, xte, tr_t, tr_e, grid, t, seed: int = 0):
    """scikit-survival RandomSurvivalForest (GPL-3; a benchmark baseline only): 200 trees, min leaf 15."""
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    rsf = RandomSurvivalForest(n_estimators=200, min_samples_leaf=15, max_features="sqrt", n_jobs=1,
                               random_state=seed).fit(np.asarray(xtr), Surv.from_arrays(tr_e.astype(bool), tr_t))
    risk = rsf.predict(np.asarray(xte))
    fns = rsf.predict_survival_function(np.asarray(xte))
    surv = np.array([fn(np.clip(grid, fn.x[0], fn.x[-1])) for fn in fns])
    surv[:, grid < fns[0].x[0]] = 1.0
    s_own = np.array([fn(np.clip(ti, fn.x[0], fn.x[-1])) if ti >= fn.x[0] else 1.0 for fn, ti in zip(fns, t)])
    return risk, surv, s_own
