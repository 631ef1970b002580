"""Cohort zoo: bayesfuse vs simple baselines on many cohorts and variants, one table (issue 14).

Each row (cohort, variant) and seed compares bayesfuse with LR and a random forest (classification) or CoxPH
and RSF (survival) on the same split; rows, metrics and rule: docs/benchmarks.md and the table's legend. ::

    PYTHONPATH=. python benchmarks/zoo.py --task all --seeds 0 1 2 --tag baseline
    PYTHONPATH=. python benchmarks/zoo.py --quick --tag smoke
    PYTHONPATH=. python benchmarks/zoo.py --rows 'cls:tcga_*' --model-kwargs '{"latent_dim": 8}' --tag ld8
    PYTHONPATH=. python benchmarks/zoo.py --table benchmarks/results/zoo_baseline.json benchmarks/results/zoo_ld8.json
"""

import argparse
import fnmatch
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCHEMA = "bayesfuse-zoo/1"
NOISE_FEATURES = 2000
ECE_FLOOR, ACC_SLACK, C_SLACK, DCAL_ALPHA = 0.03, 0.01, 0.01, 0.05
BASELINES = {"classification": ("LR", "RF"), "survival": ("CoxPH", "RSF")}
FOOTNOTE = ("Cohorts: ../shared/data (tcga_gbmlgg Apache-2.0, tcga_rare6 MIT, cll LGPL-3, metabric/support/gbsg/"
            "whas MIT); wdbc = scikit-learn load_breast_cancer (UCI WDBC, CC BY 4.0); gse7390 = scikit-survival "
            "load_breast_cancer (GEO GSE7390, Desmedt et al. 2007); dlbcl / chop / dbcd / aml_bull / nsbcd / nki70 = the "
            "SurvSet package (GPL-3; its sources: DLBCL Rosenwald et al. 2002, chop = R bujar, DBCD = Sorlie / van de "
            "Vijver breast cohort, AML_Bull Bullinger et al. 2004, NSBCD Sorlie et al. 2003, nki70 = R penalized), rows "
            "'*/resplit' draw a new stratified 75/25 split per seed. Data are read from the installed packages / "
            "shared folder, never committed.")


@dataclass(frozen=True)
class Row:
    """One zoo row ``"<cls|surv>:<cohort>/<variant>"``: a cohort and the variant applied to its split
    (``n_train`` subsample, ``missing`` modality, ``noise`` modality, kept ``modalities``, ``counts``
    log1p-CPM for the baselines, ``seeds`` instead of ``--seeds``, ``sim``: ``simulate`` arguments)."""

    name: str
    task: str
    cohort: str
    target: str
    n_train: int | None = None
    missing: bool = False
    noise: str | None = None
    modalities: tuple | None = None
    counts: tuple = ()
    seeds: tuple | None = None
    sim: dict = field(default_factory=dict)
    resplit: bool = False

def _variants(prefix: str, cohort: str, target: str, task: str, noise: str | None, counts: tuple = (),
              missing: bool = True) -> list[Row]:
    """The full / n100 / n200 (/ missing / noise) rows of one real cohort."""
    rows = [Row(f"{prefix}:{cohort}/{v}", task, cohort, target, n_train=n, counts=counts)
            for v, n in (("full", None), ("n100", 100), ("n200", 200))]
    if task == "classification":
        if missing:
            rows.append(Row(f"{prefix}:{cohort}/missing", task, cohort, target, missing=True, counts=counts))
        rows.append(Row(f"{prefix}:{cohort}/noise", task, cohort, target, noise=noise, counts=counts))
    return rows


def _sim_rows() -> list[Row]:
    """Simulator rows: one factor varied at a time around the base cohort."""
    p_mods = {p: {"expression": ("gaussian", p), "methylation": ("gaussian", p), "mutation": ("bernoulli", p)}
              for p in (50, 2000)}
    base = {"n_patients": 400, "class_separation": 2.5}
    vary = {"base": {}, "sep1.5": {"class_separation": 1.5}, "sep4": {"class_separation": 4.0},
            "n150": {"n_patients": 150}, "n1000": {"n_patients": 1000}, "p50": {"modalities": p_mods[50]},
            "p2000": {"modalities": p_mods[2000]}, "imbalance": {"n_patients": 600, "imbalance": 0.1},
            "missing0.3": {"missing_rate": 0.3}, "binary": {"n_subtypes": 2}}
    rows = [Row(f"cls:sim/{k}", "classification", "sim", "subtype", sim={**base, **v}) for k, v in vary.items()]
    return rows + [Row("cls:sim/noise", "classification", "sim", "subtype", sim=base, noise="expression")]


def _sim_survival_rows() -> list[Row]:
    """Simulator survival rows (Weibull times driven by the latent, 30% censoring), 80 or 150 features, 400 or 150
    patients (more features make the CoxPH baseline's inner cross-validation take minutes per fit)."""
    p80 = {"expression": ("gaussian", 40), "protein": ("gaussian", 40)}
    p150 = {"expression": ("gaussian", 100), "protein": ("gaussian", 50)}
    vary = {"p80": {"modalities": p80}, "p80-n150": {"n_patients": 150, "modalities": p80},
            "p150": {"modalities": p150}, "p150-n150": {"n_patients": 150, "modalities": p150}}
    return [Row(f"surv:sim/{k}", "survival", "sim", "survival", sim={"n_patients": 400, **v}) for k, v in vary.items()]


def all_rows() -> list[Row]:
    """Every zoo row, classification first."""
    rows = (_variants("cls", "tcga_gbmlgg", "subtype", "classification", noise="protein")
            + _variants("cls", "tcga_rare6", "origin", "classification", noise="noise", counts=("rna_counts",),
                        missing=False)
            + _variants("cls", "cll", "subtype", "classification", noise="drugs")
            + _variants("cls", "wdbc", "diagnosis", "classification", noise="mean")
            + _sim_rows())
    for cohort in ("metabric", "support", "gbsg", "whas", "tcga_gbmlgg", "cll"):
        rows += _variants("surv", cohort, "survival", "survival", noise=None)
    rows = [replace(r, seeds=(0,)) if r.name == "surv:support/full" else r for r in rows]
    rows += [Row("surv:tcga_gbmlgg/protein-only", "survival", "tcga_gbmlgg", "survival", modalities=("protein",)),
             Row("surv:cll/drugs-only", "survival", "cll", "survival", modalities=("drugs",)),
             Row("surv:gse7390/full", "survival", "gse7390", "survival"),
             Row("surv:gse7390/n100", "survival", "gse7390", "survival", n_train=100)]
    rows += _sim_survival_rows()
    rows += [Row(f"surv:{c}/resplit", "survival", c, "survival", resplit=True) for c in SURVSET]
    return rows


QUICK = ("cls:sim/base", "cls:tcga_gbmlgg/n100", "surv:whas/n100")


def select_rows(rows: list[Row], patterns: list[str] | None, task: str) -> list[Row]:
    """Rows of ``task`` whose name matches any pattern (glob when it has ``*?[``, else a regex search)."""
    rows = [r for r in rows if task == "all" or r.task == task]
    if not patterns:
        return rows
    return [r for r in rows if any(fnmatch.fnmatch(r.name, p) if any(ch in p for ch in "*?[")
                                   else re.search(p, r.name) for p in patterns)]


def shared_split(labels: pd.Series, test_share: float = 0.2) -> pd.Series:
    """The shared data's stratified 80/20 recipe (RandomState(0), strata in sorted label order)."""
    rs = np.random.RandomState(0)
    split = pd.Series("train", index=labels.index, dtype=object)
    for _, idx in sorted(labels.groupby(labels.astype(str)).groups.items()):
        perm = rs.permutation(len(idx))
        split.loc[np.asarray(idx)[perm[: int(np.floor(test_share * len(idx) + 0.5))]]] = "test"
    return split


def resplit(labels: pd.Series, seed: int, test_share: float = 0.25) -> pd.Series:
    """A stratified ``1 - test_share`` / ``test_share`` train / test split drawn with ``seed``."""
    from sklearn.model_selection import train_test_split

    _, te = train_test_split(labels.index.to_numpy(), test_size=test_share, random_state=seed,
                             stratify=labels.astype(str).to_numpy())
    return pd.Series(np.where(labels.index.isin(te), "test", "train"), index=labels.index, dtype=object)


def load_wdbc():
    """scikit-learn's breast cancer (WDBC) as three modalities: mean / error / worst features."""
    from sklearn.datasets import load_breast_cancer

    import bayesfuse as bf

    d = load_breast_cancer(as_frame=True)
    x = d.data.copy()
    x.index = pd.Index([f"wdbc-{i:03d}" for i in range(len(x))], name="sample_id")
    groups = {"mean": [c for c in x if c.startswith("mean ")], "error": [c for c in x if c.endswith(" error")],
              "worst": [c for c in x if c.startswith("worst ")]}
    y = pd.Series(np.asarray(d.target_names)[d.target.to_numpy()], index=x.index, name="diagnosis")
    targets = pd.DataFrame({"diagnosis": y, "split": shared_split(y)})
    return bf.MultiModalData({m: x[c] for m, c in groups.items()}, targets=targets, name="wdbc")


def load_gse7390():
    """scikit-survival's gene-expression breast cancer cohort: expression + clinical, time to metastasis."""
    from sksurv.datasets import load_breast_cancer

    import bayesfuse as bf

    x, y = load_breast_cancer()
    x.index = pd.Index([f"gse7390-{i:03d}" for i in range(len(x))], name="sample_id")
    clin = pd.DataFrame({"age": x["age"], "size": x["size"], "er": (x["er"] == "positive").astype(float)})
    for g in ("well differentiated", "intermediate", "poorly differentiated"):
        clin[f"grade={g}"] = (x["grade"] == g).astype(float)
    expr = x.drop(columns=["age", "er", "grade", "size"]).astype(float)
    ev = pd.Series(y["e.tdm"].astype(int), index=x.index)
    targets = pd.DataFrame({"time": y["t.tdm"].astype(float), "event": ev, "split": shared_split(ev)},
                           index=x.index)
    return bf.MultiModalData({"expression": expr, "clinical": clin}, targets=targets, name="gse7390")


#: SurvSet cohort -> zoo cohort name (gene-expression survival cohorts of 115-414 patients, 71-7,399 genes)
SURVSET = {"dlbcl": "DLBCL", "chop": "chop", "dbcd": "DBCD", "aml_bull": "AML_Bull", "nsbcd": "NSBCD",
           "nki70": "nki70"}


def load_survset(cohort: str):
    """A SurvSet gene-expression survival cohort (``pip install SurvSet``): ``num_*`` genes as ``expression``, the
    ``fac_*`` columns and ``num_Age`` (nki70) one-hot as ``clinical``; time, event; ``split`` is redrawn per seed."""
    from SurvSet.data import SurvLoader

    import bayesfuse as bf

    df = SurvLoader().load_dataset(ds_name=SURVSET[cohort])["df"]
    df.index = pd.Index([f"{cohort}-{i}" for i in df["pid"]], name="sample_id")
    clin_num = [c for c in df if c.lower() == "num_age"]
    genes = [c for c in df if c.startswith("num_") and c not in clin_num]
    fac = [c for c in df if c.startswith("fac_")]
    mods = {"expression": df[genes].astype(float).rename(columns=lambda c: c[4:])}
    if fac or clin_num:
        clin = pd.concat([df[clin_num].astype(float), pd.get_dummies(df[fac].astype(str), drop_first=True,
                                                                       dtype=float)], axis=1)
        mods["clinical"] = clin
    ev = df["event"].astype(int)
    targets = pd.DataFrame({"time": df["time"].astype(float), "event": ev, "split": shared_split(ev)},
                           index=df.index)
    return bf.MultiModalData(mods, targets=targets, name=cohort)


def load_sim(seed: int, imbalance: float | None = None, n_subtypes: int = 3, **kwargs):
    """A simulated subtype cohort (redrawn per seed); ``imbalance``: class S1 subsampled to that share."""
    from bayesfuse.datasets import simulate

    data, _ = simulate(n_subtypes=n_subtypes, n_origins=0, seed=1000 + seed, **kwargs)
    if imbalance:
        y = data.targets["subtype"]
        rare, rest = y.index[y == "S1"], y.index[y != "S1"]
        k = min(len(rare), int(round(imbalance / (1 - imbalance) * len(rest))))
        keep = np.random.default_rng(seed).choice(len(rare), k, replace=False)
        kept = set(rest) | set(rare[keep])
        data = data.subset(ids=[i for i in y.index if i in kept])
    return data


def load_cohort(row: Row, seed: int, data_root: Path):
    """The full cohort of ``row`` (with its ``split`` column), leakage columns dropped."""
    if row.cohort == "sim":
        return load_sim(seed, **row.sim)
    if row.cohort in ("wdbc", "gse7390"):
        return load_wdbc() if row.cohort == "wdbc" else load_gse7390()
    if row.cohort in SURVSET:
        return load_survset(row.cohort)
    drop = C.LEAKAGE.get(row.cohort) if row.task == "classification" else None
    return C.read_cached(Path(data_root) / row.cohort, drop)


def add_noise(data, modality: str, seed: int, n_features: int = NOISE_FEATURES):
    """Append ``n_features`` i.i.d. N(0, 1) columns to ``modality`` (a new Gaussian modality if absent)."""
    rng = np.random.default_rng(10_000 + seed)
    ids = data.modality(modality).index if modality in data.modality_names else pd.Index(data.sample_ids)
    noise = pd.DataFrame(rng.standard_normal((len(ids), n_features)), index=ids,
                         columns=[f"noise_{k:04d}" for k in range(n_features)])
    if modality in data.modality_names:
        noise = pd.concat([data.modality(modality), noise], axis=1)
    return data.with_modality(modality, noise)


def stratified_subsample(data, n: int, strata: pd.Series, seed: int):
    """``n`` patients of ``data`` (those with a known stratum), stratified by ``strata``; None if too few."""
    from sklearn.model_selection import train_test_split

    known = strata.dropna()
    if len(known) <= n:
        return None
    ids, _ = train_test_split(known.index.to_numpy(), train_size=n, stratify=known.astype(str).to_numpy(),
                              random_state=seed)
    return data.subset(ids=list(ids))


def drop_one_modality(data, seed: int, share: float = 0.5):
    """About ``share`` of the patients lose one random modality they have (never their only one): the new data
    and the number of patients that lost one (None: no patient has two)."""
    import bayesfuse as bf

    pres = data.presence
    eligible = np.flatnonzero(pres.sum(axis=1).to_numpy() >= 2)
    if eligible.size == 0:
        return data, None
    rng = np.random.default_rng(20_000 + seed)
    k = min(eligible.size, int(round(share * data.n_samples)))
    lost: dict[str, list] = {m: [] for m in data.modality_names}
    for i in rng.choice(eligible, k, replace=False):
        has = [m for m in data.modality_names if pres.iloc[i][m]]
        lost[has[rng.integers(len(has))]].append(data.sample_ids[i])
    mods = {m: data.modality(m).drop(index=lost[m]) for m in data.modality_names}
    return bf.MultiModalData(mods, targets=data.targets, name=data.name, copy=False), int(k)


def make_split(row: Row, seed: int, data_root: Path):
    """Train / test of ``row`` for ``seed`` and a dict of notes (or a skip reason)."""
    import importlib.util

    import bayesfuse as bf

    if row.cohort in SURVSET and importlib.util.find_spec("SurvSet") is None:
        return None, None, {"skipped": "needs the SurvSet package (benchmark only, GPL-3): pip install SurvSet"}
    data = load_cohort(row, seed, data_root)
    if row.modalities:
        data = data.select_modalities(list(row.modalities))
        data = data.subset(ids=[i for i, p in zip(data.sample_ids, data.presence.any(axis=1)) if p])
    if row.noise:
        data = add_noise(data, row.noise, seed)
    if row.resplit:
        strata = data.targets["event"] if row.task == "survival" else data.targets[row.target]
        data = bf.MultiModalData({m: data.modality(m) for m in data.modality_names},
                                 targets=data.targets.assign(split=resplit(strata, seed)), name=data.name, copy=False)
    train, test = data.subset(split="train"), data.subset(split="test")
    info: dict = {}
    if row.n_train:
        tt = train.targets   # survival: the event indicator of the patients with a usable time (> 0)
        strata = tt[row.target] if row.task == "classification" else \
            tt["event"].where(tt["time"].astype(float) > 0)
        sub = stratified_subsample(train, row.n_train, strata, seed)
        if sub is None:
            return None, None, {"skipped": f"training set has {strata.notna().sum()} usable patients "
                                           f"<= {row.n_train}"}
        train = sub
    if row.missing:
        test, k = drop_one_modality(test, seed)
        if k is None:
            return None, None, {"skipped": "no test patient has two modalities"}
        info["test_lost_modality"] = k
    return train, test, info


def classification_records(row: Row, train, test, seed: int, model_kwargs: dict, fit_kwargs: dict,
                           head_kwargs: dict, baselines: bool = True) -> dict[str, dict]:
    """bayesfuse, logistic regression and random forest metrics of one row and seed (bayesfuse only when
    ``baselines`` is false)."""
    out = {"bayesfuse": C.bayesfuse_classification(train, test, row.target, seed, model_kwargs, fit_kwargs,
                                                 head_kwargs.get("categorical", {}))}
    if not baselines:
        return out
    xtr, xte = C.baseline_features(train, test, row.counts)
    for meth in ("LR", "RF"):
        out[meth] = C.sklearn_classifier(meth, xtr, train.targets[row.target], xte, test.targets[row.target],
                                         seed)
    return out


def survival_records(row: Row, train, test, seed: int, model_kwargs: dict, fit_kwargs: dict,
                     head_kwargs: dict, baselines: bool = True) -> dict[str, dict]:
    """bayesfuse, penalised CoxPH and RSF metrics (Harrell C, Uno C, IBS, D-cal p) of one row and seed (bayesfuse
    only when ``baselines`` is false)."""
    import bayesfuse as bf
    from bayesfuse.metrics import interval_coverage

    test_eval, t, e, tr_ok, tr_t, tr_e, grid = C.eval_setup(train, test)

    def score(risk, surv, s_own):
        return C.metrics(tr_t, tr_e, t, e, risk, surv, grid, s_own)

    head = bf.heads.Survival(**{"time": "time", "event": "event", "nonpositive_times": "drop",
                                **head_kwargs.get("survival", {})})
    model = bf.FusionModel(train, heads={"survival": head}, **model_kwargs)
    t0 = time.perf_counter()
    model.fit(seed=seed, progress=False, **fit_kwargs)
    fit_s = time.perf_counter() - t0
    surv_draws, risk, s_own = C.post_outputs(model.predict(test_eval, num_samples=200, seed=seed), grid, t)
    # 90% credible band of S(t|x) vs Kaplan-Meier in predicted-risk tertiles at the test-time quartiles; "pred":
    # the band widened by the KM estimate's own Greenwood error
    band = {f"band_coverage{k}": interval_coverage(t, e, surv_draws, grid, np.quantile(t, [0.25, 0.5, 0.75]), groups=3,
                                                   prob=0.9, km_error=bool(k)).coverage for k in ("", "_pred")}
    events = {"n_events_train": int(tr_e.sum()), "n_events_test": int(e.sum())}
    out = {"bayesfuse": {**score(risk, surv_draws.mean(0), s_own), **band, "fit_s": fit_s, "latent_dim": int(model.latent_dim),
                         "epochs": int(len(model.history_)), **events}}
    if not baselines:
        return out
    xtr, xte = C.baseline_features(train.subset(ids=train.sample_ids[tr_ok]), test_eval)
    t0 = time.perf_counter()
    cr, cs, co, pen = C.run_cox(xtr, xte, tr_t, tr_e, grid, t, seed=seed)
    out["CoxPH"] = {**score(cr, cs, co), "fit_s": time.perf_counter() - t0, "penalizer": pen, **events}
    t0 = time.perf_counter()
    rr, rs, ro = C.run_rsf(xtr, xte, tr_t, tr_e, grid, t, seed)
    out["RSF"] = {**score(rr, rs, ro), "fit_s": time.perf_counter() - t0, **events}
    return out


def model_kwargs_from_json(model_kwargs: dict) -> dict:
    """``--model-kwargs`` as ``bf.FusionModel`` takes them: an ``"advanced"`` dict becomes ``bf.AdvancedConfig``."""
    import bayesfuse as bf

    if isinstance(model_kwargs.get("advanced"), dict):
        return {**model_kwargs, "advanced": bf.AdvancedConfig(**model_kwargs["advanced"])}
    return dict(model_kwargs)


def run_one(row: Row, seed: int, model_kwargs: dict, fit_kwargs: dict, head_kwargs: dict | None = None,
            data_root: Path | str | None = None, baselines: bool = True) -> list[dict]:
    """All records (one per method, or one ``skipped`` / ``error`` record) of ``row`` and ``seed``."""
    C.quiet()
    base = {"row": row.name, "task": row.task, "cohort": row.cohort, "variant": row.name.split("/", 1)[1],
            "seed": int(seed)}
    t0 = time.perf_counter()
    try:
        train, test, info = make_split(row, seed, Path(data_root or C.DATA))
        if train is None:
            return [{**base, "method": None, **info}]
        runner = classification_records if row.task == "classification" else survival_records
        res = runner(row, train, test, seed, model_kwargs_from_json(model_kwargs), fit_kwargs, head_kwargs or {},
                     baselines)
    except Exception as exc:  # noqa: BLE001  (one failed row must not end the zoo)
        return [{**base, "method": None, "error": f"{type(exc).__name__}: {exc}"}]
    sizes = {"n_train": int(train.n_samples), "n_test": int(test.n_samples),
             "n_features": int(sum(train.modality(m).shape[1] for m in train.modality_names)),
             "n_modalities": len(train.modality_names), "wall_s": time.perf_counter() - t0, **info}
    js = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in m.items()} for m in res.values()]
    return [{**base, "method": meth, **sizes, **m} for meth, m in zip(res, js)]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=C.REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def run_zoo(rows: list[Row], seeds: list[int], model_kwargs: dict, fit_kwargs: dict, head_kwargs: dict,
            data_root, tag: str, out: Path | None, jobs: int = 1, log=print, baselines: bool = True) -> dict:
    """Run every (row, seed), writing the JSON after each so an interrupted run keeps what it measured;
    ``baselines=False`` fits bayesfuse only (render it beside a run that has the baselines)."""
    doc = {"schema": SCHEMA, "tag": tag, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
           "argv": sys.argv[1:], "model_kwargs": model_kwargs, "fit_kwargs": fit_kwargs, "head_kwargs": head_kwargs,
           "seeds": list(seeds), "rows": [r.name for r in rows], "baselines": baselines, "records": []}
    tasks = [(r, s) for r in rows for s in (r.seeds if r.seeds is not None else seeds)]
    done = [0]

    def collect(r, s, recs):
        doc["records"].extend(recs)
        bf_rec = next((x for x in recs if x.get("method") == "bayesfuse"), recs[0])
        msg = bf_rec.get("error") or bf_rec.get("skipped") or f"bayesfuse fit {bf_rec['fit_s']:.1f} s, " \
                                                                f"row wall {bf_rec['wall_s']:.1f} s"
        done[0] += 1
        log(f"[{done[0]}/{len(tasks)}] {r.name} seed {s}: {msg}")
        if out is not None:
            C.write_json(doc, out)

    if jobs <= 1:
        for r, s in tasks:
            collect(r, s, run_one(r, s, model_kwargs, fit_kwargs, head_kwargs, data_root, baselines))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as ex:
            futs = [(r, s, ex.submit(run_one, r, s, model_kwargs, fit_kwargs, head_kwargs, data_root, baselines))
                    for r, s in tasks]
            for r, s, f in futs:
                collect(r, s, f.result())
    return doc


def summarise(records: list[dict]) -> pd.DataFrame:
    """Mean over seeds per (row, method) of every numeric field, plus ``seeds`` and ``note``."""
    df = pd.DataFrame(records)
    order = list(dict.fromkeys(df["row"]))
    notes = {}
    for row, g in df.groupby("row", sort=False):
        bad = g[g["method"].isna()]
        if len(bad):
            col = "error" if "error" in bad and bad["error"].notna().any() else "skipped"
            notes[row] = f"{col}: {bad[col].dropna().iloc[0]}" if col in bad else ""
    ok = df[df["method"].notna()]
    num = ok.select_dtypes("number").columns.drop("seed", errors="ignore")
    if len(ok):
        mean = ok.groupby(["row", "method"], sort=False)[list(num)].mean()
        mean["seeds"] = ok.groupby(["row", "method"], sort=False)["seed"].nunique()
        meta = ok.groupby(["row", "method"], sort=False)[["task"]].first()
        mean = mean.join(meta).reset_index()
    else:
        mean = pd.DataFrame(columns=["row", "method", "task", "seeds"])
    rows_only = [r for r in order if r not in set(mean["row"])]
    extra = pd.DataFrame({"row": rows_only, "method": None,
                          "task": [df.loc[df["row"] == r, "task"].iloc[0] for r in rows_only]})
    out = pd.concat([mean, extra], ignore_index=True)
    out["note"] = out["row"].map(notes).fillna("")
    out["row"] = pd.Categorical(out["row"], order, ordered=True)
    return out.sort_values("row", kind="stable").reset_index(drop=True)


def acceptance(task: str, bf: dict, ref: dict) -> tuple[bool, dict[str, float]]:
    """Issue 14's rule on seed-mean metrics against ``ref`` (LR / CoxPH; the legend of :func:`render_table`):
    ``(passed, {criterion: miss margin > 0})``."""
    if task == "classification":
        gaps = {"ECE": bf["ece"] - max(ECE_FLOOR, ref["ece"]), "acc": (ref["accuracy"] - ACC_SLACK) - bf["accuracy"],
                "NLL": bf["nll"] - ref["nll"]}
    else:
        gaps = {"C": (ref["harrell_c"] - C_SLACK) - bf["harrell_c"]}
    misses = {k: float(v) for k, v in gaps.items() if v > 0}
    if task != "classification" and not bf["dcal_p"] > DCAL_ALPHA:   # p = 0.05 misses (by 0)
        misses["Dcal p"] = float(DCAL_ALPHA - bf["dcal_p"])
    return not misses, misses


def format_misses(misses: dict[str, float]) -> str:
    """``"ECE +0.033, acc -0.020"``: the sign says which side of its bound the metric fell."""
    return ", ".join(f"{k} {'-' if k in ('acc', 'C', 'Dcal p') else '+'}{v:{'.3f' if v >= 5e-4 else '.1e'}}"
                     for k, v in misses.items())


CELLS = {"classification": [("acc", "accuracy"), ("F1", "macro_f1"), ("NLL", "nll"), ("ECE", "ece")],
         "survival": [("C", "harrell_c"), ("IBS", "ibs"), (None, None), ("Dcal p", "dcal_p")]}


def _cell(values: list, fmt: str = ".3f") -> str:
    return " / ".join("-" if v is None or not np.isfinite(v) else f"{v:{fmt}}" for v in values)


def _get(summary: pd.DataFrame, row: str, method: str) -> dict | None:
    hit = summary[(summary["row"] == row) & (summary["method"] == method)]
    return None if hit.empty else hit.iloc[0].to_dict()


def render_table(docs: list[dict]) -> str:
    """Markdown table of one run, or of several side by side: cells ``bayesfuse / baseline 1 / baseline 2``
    (``bf[tag1] / bf[tag2] / ... / b1 / b2``); classification: acc, F1, NLL, ECE; survival: C, IBS, -, D-cal
    p."""
    tags = [d.get("tag", f"run{i}") for i, d in enumerate(docs)]
    sums = [summarise(d["records"]) for d in docs]
    rows = list(dict.fromkeys(r for s in sums for r in s["row"].astype(str)))
    lead = "bf" if len(docs) == 1 else " / ".join(f"bf[{t}]" for t in tags)
    head = ["row", "n train/test", "seeds", f"acc, C ({lead} / LR, Cox / RF, RSF)", "F1, IBS", "NLL",
            "ECE, Dcal p", "bf ECE p", "fit s (bf / b1 / b2)"] + [f"rule [{t}]" for t in tags]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        first = next((s for s in sums if (s["row"] == row).any()), sums[0])
        task = first.loc[first["row"] == row, "task"].iloc[0]
        b1, b2 = BASELINES[task]
        bfs = [_get(s, row, "bayesfuse") for s in sums]
        ref = next((x for x in (_get(s, row, b1) for s in sums) if x), None)
        alt = next((x for x in (_get(s, row, b2) for s in sums) if x), None)
        if all(b is None for b in bfs) or ref is None:
            note = first.loc[first["row"] == row, "note"].iloc[0] or "no result"
            lines.append(f"| {row} | | | {note} |" + " |" * (len(head) - 4))
            continue
        main = next(b for b in bfs if b)
        cells = [row, f"{main['n_train']:.0f}/{main['n_test']:.0f}", f"{main['seeds']:.0f}"]
        for _, key in CELLS[task]:
            vals = [b.get(key) if b and key else None for b in bfs] + \
                   [(ref or {}).get(key) if key else None, (alt or {}).get(key) if key else None]
            cells.append("-" if key is None else _cell(vals))
        cells.append(_cell([b.get("ece_p") if b else None for b in bfs]) if task == "classification" else "-")
        cells.append(_cell([b.get("fit_s") if b else None for b in bfs] + [ref.get("fit_s"), (alt or {}).get("fit_s")],
                           ".1f"))
        for b in bfs:
            ok, misses = acceptance(task, b, ref) if b else (False, {})
            cells.append("-" if b is None else "pass" if ok else f"**miss** {format_misses(misses)}")
        lines.append("| " + " | ".join(cells) + " |")
    legend = ("Means over seeds. Cells: bayesfuse / logistic regression (L2, C=1) / random forest (500 trees) for "
              "classification (acc, macro-F1, NLL, top-label ECE, 15 bins; 'bf ECE p' = consistency-resampling "
              "p-value), bayesfuse / CoxPH (L2, inner-CV penalty) / RSF for survival (Harrell C, IBS, D-calibration "
              "p). Rule (issue 14): ECE <= max(0.03, LR), acc >= LR - 0.01, NLL <= LR; C >= CoxPH - 0.01, "
              "D-cal p > 0.05; miss margins: how far each missed criterion is from its bound.")
    return "\n".join(lines) + "\n\n" + legend + "\n" + FOOTNOTE


def miss_list(doc: dict) -> list[tuple[str, dict]]:
    """Rows of a run that miss the acceptance rule, with their margins."""
    s = summarise(doc["records"])
    out = []
    for row in dict.fromkeys(s["row"].astype(str)):
        task = s.loc[s["row"] == row, "task"].iloc[0]
        b, ref = _get(s, row, "bayesfuse"), _get(s, row, BASELINES[task][0])
        if b and ref:
            ok, misses = acceptance(task, b, ref)
            if not ok:
                out.append((row, misses))
    return out


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", nargs="*", help="glob or regex filters on row names (e.g. 'cls:tcga_*' 'n100$')")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--tag", default="run")
    ap.add_argument("--model-kwargs", type=json.loads, default={},
                    help='JSON passed to bf.FusionModel; "advanced": {...} becomes bf.AdvancedConfig(...)')
    ap.add_argument("--fit-kwargs", type=json.loads, default={}, help="JSON passed to FusionModel.fit")
    ap.add_argument("--head-kwargs", type=json.loads, default={},
                    help='JSON {"categorical": {...}, "survival": {...}} passed to the head specs')
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: rows {', '.join(QUICK)}, seed 0, max_epochs 40 unless --fit-kwargs sets it")
    ap.add_argument("--data-root", default=str(C.DATA))
    ap.add_argument("--task", choices=["classification", "survival", "all"], default="all")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--bayesfuse-only", action="store_true",
                    help="skip the baselines (compare with --table BASELINE_RUN.json THIS_RUN.json)")
    ap.add_argument("--list", action="store_true", help="print the selected row names and exit")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="re-render the table from saved results (no fitting)")
    args = ap.parse_args(argv)
    if args.table:
        return print(render_table([json.loads(Path(p).read_text()) for p in args.table]))
    rows = select_rows(all_rows(), list(QUICK) if args.quick and not args.rows else args.rows, args.task)
    if args.list:
        return print("\n".join(r.name for r in rows))
    if not rows:
        raise SystemExit(f"No zoo row matches --rows {args.rows} with --task {args.task} (a pattern with * ? [ is a "
                         "glob, e.g. 'surv:*n100'; otherwise a regex, e.g. 'n100$'). List the rows with --list.")
    seeds, fit_kwargs = args.seeds, dict(args.fit_kwargs)
    if args.quick:
        seeds = [0]
        fit_kwargs.setdefault("max_epochs", 40)
        rows = [replace(r, seeds=None) for r in rows]
    out = C.RESULTS / f"zoo_{args.tag}.json"
    t0 = time.perf_counter()
    doc = run_zoo(rows, seeds, args.model_kwargs, fit_kwargs, args.head_kwargs, args.data_root, args.tag, out,
                  args.jobs, log=lambda m: print(m, file=sys.stderr, flush=True), baselines=not args.bayesfuse_only)
    doc["total_s"] = time.perf_counter() - t0
    C.write_json(doc, out)
    if args.bayesfuse_only:
        print(f"bayesfuse only: compare with `python benchmarks/zoo.py --table BASELINE_RUN.json {out}`")
    else:
        print(render_table([doc]))
    print(f"\nJSON: {out} ({doc['total_s'] / 60:.1f} min)")
    return doc


if __name__ == "__main__":
    main()
