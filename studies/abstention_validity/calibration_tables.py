"""Render the markdown tables of docs/studies/calibration.md from a ``studies/abstention_validity/calibration.py --json`` file.

    PYTHONPATH=. python studies/abstention_validity/calibration.py --json results/calibration.json
    PYTHONPATH=. python studies/abstention_validity/calibration_tables.py results/calibration.json > tables.md

Prints, in order: violation share on the test halves, against the simulator population, test halves / pool
(real data), base error, the paired usefulness table, the unseen-class tables (AUROC, refusal per gate at
each gate quantile) and the conformal table; with ``--only survival`` output, the survival tables of
docs/calibration.md (lower bound, abstainer with both start-point rules, multi-task). Cells above the allowed share are bold. The
tables are pasted into docs/studies/calibration.md as they are, so the docs show the numbers of one run.
"""

from __future__ import annotations

import argparse
import json
import re

#: benchmark method name -> column header of the docs tables
COLUMNS = {
    "bayesfuse LTT": "bf LTT",
    "bayesfuse LTT, 4 starts": "bf 4 starts",
    "bayesfuse LTT, head weight tuned": "bf tuned w",
    "over-confident LTT": "over-conf. LTT",
    "logistic regression LTT": "LR LTT",
    "logistic regression LTT, C tuned": "LR tuned C",
    "logistic regression LTT, 4 starts": "LR 4 starts",
    "over-confident plug-in (self-reported risk)": "over-conf. plug-in self",
    "over-confident plug-in (empirical risk)": "over-conf. plug-in emp.",
    "bayesfuse plug-in (empirical risk)": "bf plug-in emp.",
}
POOL_COLUMNS = ["bf LTT", "bf 4 starts", "over-conf. LTT", "LR LTT", "over-conf. plug-in self",
                "over-conf. plug-in emp.", "bf plug-in emp."]
PAIRED_NAMES = {"bayesfuse LTT": "bf LTT", "bayesfuse LTT, head weight tuned": "bf tuned w",
                "bayesfuse LTT, 4 starts": "bf 4 starts", "logistic regression LTT": "LR LTT",
                "logistic regression LTT, C tuned": "LR tuned C", "logistic regression LTT, 4 starts": "LR 4 starts"}


def short_name(dataset: str) -> str:
    """'simulator sep=2.5 (600 train / ...)' -> 'simulator sep=2.5'; 'tcga_x subtype: cross-fit 5-fold, seed 0'
    -> 'tcga_x: cross-fit, seed 0'."""
    name = re.sub(r"\s*\(.*\)$", "", dataset)
    name = re.sub(r"^(tcga_\w+) \w+:", r"\1:", name)
    return name.replace("cross-fit 5-fold", "cross-fit")


def _cell(value, allowed, bold=True) -> str:
    if value is None or value != value:        # None or NaN
        return "-"
    text = f"{value:.3f}"
    return f"**{text}**" if bold and value > allowed else text


def violation_tables(studies) -> str:
    header = "| dataset | max_risk | " + " | ".join(COLUMNS.values()) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    test, population, pool = [header, rule], [header, rule], []
    pool += ["| dataset | max_risk | " + " | ".join(POOL_COLUMNS) + " |", "|" + "---|" * (len(POOL_COLUMNS) + 2)]
    base = ["| dataset | pool | bayesfuse | logistic regression |", "|---|---|---|---|"]
    for st in studies:
        name = short_name(st["dataset"])
        base.append(f"| {name} | {st['n_pool']} | {st['base_error']:.3f} | {st['base_error_logreg']:.3f} |")
        by_risk: dict[float, dict[str, dict]] = {}
        for r in st["rows"]:
            by_risk.setdefault(r["max_risk"], {})[COLUMNS.get(r["method"], r["method"])] = r
        for risk in sorted(by_risk, reverse=True):
            rows = by_risk[risk]
            allowed = next(iter(rows.values()))["allowed (delta + slack)"]
            cells = [_cell(rows[c]["violation_share"], allowed) if c in rows else "-" for c in COLUMNS.values()]
            test.append(f"| {name} | {risk:g} | " + " | ".join(cells) + " |")
            if name.startswith("simulator"):
                cells = [_cell(rows[c]["population_violation_share"], allowed) if c in rows else "-"
                         for c in COLUMNS.values()]
                population.append(f"| {name} | {risk:g} | " + " | ".join(cells) + " |")
            else:
                cells = [f"{_cell(rows[c]['violation_share'], allowed, bold=False)} / "
                         f"{_cell(rows[c]['pool_violation_share'], allowed)}" if c in rows else "-"
                         for c in POOL_COLUMNS]
                pool.append(f"| {name} | {risk:g} | " + " | ".join(cells) + " |")
    return "\n\n".join(["Violation share on the test halves:", "\n".join(test),
                        "Simulator, violation share against the population:", "\n".join(population),
                        "Real data, test halves / pool:", "\n".join(pool), "Base error:", "\n".join(base)])


def paired_table(paired) -> str:
    lines = ["| dataset | max_risk | method | baseline | n_splits | n_crossfits | bf (sd) | baseline (sd) | diff (sd) "
             "| better/tied/worse | per_crossfit_mean_diff |", "|" + "---|" * 11]
    for p in paired:
        lines.append(
            f"| {short_name(p['dataset'])} | {p['max_risk']:g} | {PAIRED_NAMES.get(p['method'], p['method'])} | "
            f"{PAIRED_NAMES.get(p['baseline'], p['baseline'])} | {p['n_splits']} | {p['n_crossfits']} | "
            f"{p['coverage']:.3f} ({p['sd']:.3f}) | {p['baseline_coverage']:.3f} ({p['baseline_sd']:.3f}) | "
            f"{p['mean_diff']:+.3f} ({p['sd_diff']:.3f}) | "
            f"{p['share_better']:.2f}/{p['share_tied']:.2f}/{p['share_worse']:.2f} | {p['per_crossfit_mean_diff']} |")
    return "\n".join(lines)


GATES = {"none (confidence only)": "none", "mutual_info": "MI", "latent kNN distance": "kNN",
         "latent Mahalanobis": "Mahalanobis", "-ELBO per feature": "-ELBO", "joint (Mahalanobis, -ELBO)": "joint"}


def unseen_tables(unseen) -> str:
    """AUROC per held-out type and gate; refused share (worst split) per gate quantile; known-type coverage."""
    types = list(dict.fromkeys(u["held_out_class"] for u in unseen))
    gates = [g for g in GATES if g != "none (confidence only)"]
    out = ["AUROC, known out-of-fold patients vs the held-out type:", "",
           "| held out (n) | " + " | ".join(f"AUROC {GATES[g]}" for g in gates) + " |", "|" + "---|" * (len(gates) + 1)]
    for t in types:
        n = next(u["n_unseen"] for u in unseen if u["held_out_class"] == t)
        row = [next((f"{u['auroc_known_vs_unseen']:.3f}" for u in unseen if u["held_out_class"] == t
                     and u["gate"] == g), "-") for g in gates]
        out.append(f"| {t} ({n}) | " + " | ".join(row) + " |")
    quantiles = sorted({u["ood_quantile"] for u in unseen if u["ood_quantile"] is not None
                        and u["ood_quantile"] == u["ood_quantile"]}, reverse=True)
    for q in quantiles:
        cols = (["none (confidence only)"] if q == quantiles[0] else []) + gates
        out += ["", f"Refused share of the unseen type, mean over splits (worst split), gate quantile {q:g}; last "
                "columns: coverage kept on known types (sd over splits)", "",
                "| held out | " + " | ".join(GATES[g] for g in cols) + " | known cov., no gate | known cov., "
                "Mahalanobis | known cov., joint |", "|" + "---|" * (len(cols) + 4)]
        for t in types:
            cells = []
            for g in cols:
                u = next((v for v in unseen if v["held_out_class"] == t and v["gate"] == g
                               and (g.startswith("none") or v["ood_quantile"] == q)), None)
                if u is None:
                    cells.append("-")
                    continue
                val = f"{u['refused_unseen']:.3f}"
                cells.append(f"{'**' + val + '**' if u['refused_unseen'] >= 0.9 else val} ({u['refused_unseen_min']:.2f})")
            cov = []
            for g in ("none (confidence only)", "latent Mahalanobis", "joint (Mahalanobis, -ELBO)"):
                u = next((v for v in unseen if v["held_out_class"] == t and v["gate"] == g
                          and (g.startswith("none") or v["ood_quantile"] == q)), None)
                cov.append("-" if u is None else f"{u['coverage_known']:.3f} ({u['sd_coverage_known']:.3f})")
            out.append(f"| {t} | " + " | ".join(cells + cov) + " |")
    return "\n".join(out)


def conformal_table(studies) -> str:
    out = ["| dataset | LAC coverage | LAC mean size | APS coverage | APS mean size | 2 s.e. (one split) | within |",
           "|---|---|---|---|---|---|---|"]
    for st in studies:
        c = {r["method"]: r for r in st.get("conformal", [])}
        if not {"lac", "aps"} <= set(c):
            continue
        lac, aps = c["lac"], c["aps"]
        out.append(f"| {short_name(st['dataset'])} | {lac['mean_coverage']:.3f} | {lac['mean_set_size']:.3f} | "
                   f"{aps['mean_coverage']:.3f} | {aps['mean_set_size']:.3f} | {lac['binomial_2se_one_split']:.3f} | "
                   f"{lac['within_binomial_error'] and aps['within_binomial_error']} |")
    return "\n".join(out)


def _survival_name(dataset: str) -> str:
    """'simulator: fresh calibration draws, censoring = Kaplan-Meier of ...' -> 'simulator, fresh draws, G = KM(train)'."""
    name = dataset.replace("simulator: fresh calibration draws, censoring = Kaplan-Meier of the 600 training patients",
                           "simulator, fresh draws, G = KM(train)")
    name = name.replace("simulator: fresh calibration draws, censoring = true censoring law",
                        "simulator, fresh draws, G = true")
    return name.replace(": re-splits of the pool", "")


def survival_tables(res: dict, allowed: float = 0.164) -> str:
    """The lower-bound, abstainer and multi-task tables of docs/calibration.md from ``--only survival`` output.

    Simulator: violations against the true event times (and, for the fresh draws, bound coverage too); real
    cohorts: known-status coverage and IPCW violations. Bold: coverage below the floor, violation share above ``allowed``.
    """
    out = ["| dataset | c0 | n known | floor | bf conformal: known / IPCW / worst | true T | CoxPH conformal | "
           "over-conf. conformal | over-conf. plug-in | bf plug-in | mean bound bf / CoxPH |", "|" + "---|" * 11]
    for st in res["survival"]:
        b = {r["method"]: r for r in st["bound"]}
        fresh = "fresh" in st["dataset"]
        key = "coverage_true" if fresh else "coverage_known"
        floor = b["bayesfuse conformal"]["floor (1-alpha-3sd)"]

        def cov(m, b=b, key=key, floor=floor):
            v = b[m][key]
            return f"**{v:.3f}**" if v < floor else f"{v:.3f}"
        bc = b["bayesfuse conformal"]
        true = f"{bc['coverage_true']:.3f}" if bc.get("coverage_true") is not None else "-"
        out.append(f"| {_survival_name(st['dataset'])} | {bc['c0']:.4g} | {bc['mean_n_known']:.0f} | {floor:.3f} | "
                   f"{bc['coverage_known']:.3f} / {bc['coverage_ipcw']:.3f} / {bc['coverage_worst']:.3f} | {true} | "
                   f"{cov('CoxPH conformal')} | {cov('over-confident conformal')} | {cov('over-confident plug-in')} | "
                   f"{cov('bayesfuse plug-in')} | {bc['mean_bound']:.4g} / {b['CoxPH conformal']['mean_bound']:.4g} |")
    rules = ["bayesfuse LTT, 4 starts", "bayesfuse LTT", "CoxPH LTT, 4 starts", "CoxPH LTT", "over-confident LTT",
             "bayesfuse plug-in (empirical risk)", "over-confident plug-in (self-reported risk)"]
    heads = ["bf default", "bf `starts=1`", "CoxPH default", "CoxPH `starts=1`", "over-conf. LTT", "bf plug-in (no LTT)",
             "over-conf. plug-in self"]
    out += ["", "| dataset | tau | max_risk | violation share: " + " / ".join(heads)
            + " | answered: bf default / bf `starts=1` / CoxPH default / CoxPH `starts=1` | certifying nothing: bf "
              "default / `starts=1` |", "|" + "---|" * 6]
    for st in res["survival"]:
        a = {(r["method"], r["max_risk"]): r for r in st["abstain"]}
        for risk in sorted({r for _, r in a}):
            v = " / ".join(_cell(a[(m, risk)]["violation_share"] if a[(m, risk)].get("violation_share_true") is None
                                 else a[(m, risk)]["violation_share_true"], allowed) for m in rules)
            c = " / ".join(f"{a[(m, risk)]['mean_coverage']:.3f}" for m in rules[:4])
            n = " / ".join(f"{a[(m, risk)]['share_nothing_certified']:.2f}" for m in rules[:2])
            out.append(f"| {_survival_name(st['dataset'])} | {st['tau']:.4g} | {risk:g} | {v} | {c} | {n} |")
    out += ["", "| dataset | levels | starts | joint coverage | violation subtype | violation survival (IPCW) | any head "
                "| allowed |", "|" + "---|" * 8]
    for m in res.get("multitask", []):
        out.append(f"| {m['dataset']} | {m['levels']} | {m.get('starts', 1)} | {m['mean_coverage']:.3f} | "
                   f"{_cell(m['viol_subtype'], allowed)} | {_cell(m['viol_survival'], allowed)} | "
                   f"{_cell(m['viol_joint'], allowed)} | {m['allowed (delta+3sd)']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="output of studies/abstention_validity/calibration.py --json")
    args = ap.parse_args(argv)
    with open(args.json) as fh:
        res = json.load(fh)
    print(f"<!-- {res.get('date')} {res.get('machine')}, {res.get('seconds', float('nan')):.0f} s -->\n")
    if res.get("survival"):
        print(survival_tables(res) + "\n")
    if not res.get("studies"):
        return
    print(violation_tables(res["studies"]))
    print("\nUsefulness (paired):\n")
    print(paired_table(res["paired"]))
    if res.get("unseen"):
        print("\n" + unseen_tables(res["unseen"]))
    print("\nConformal sets:\n")
    print(conformal_table(res["studies"]))


if __name__ == "__main__":
    main()
