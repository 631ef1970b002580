"""Is the latent or the head the bottleneck on the wide survival rows? (study, 2026-12-08; not maintained)

Per row and seed, Harrell C on the zoo's scored test patients of: the default bayesfuse model; the zoo's
CV-penalised CoxPH on the genes; the same CoxPH on bayesfuse's fused latent mean ``z`` (train / test); the same
CoxPH on the top 8 / 32 principal components of the standardised genes (principal-components regression).

    python studies/wide_survival/latent_vs_ridge.py SEEDS [ROW_PATTERNS...]
    e.g. python studies/wide_survival/latent_vs_ridge.py 0,1,2,3,4 'surv:nsbcd*' 'surv:dlbcl*'
"""

import sys

import _harness as H
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

import bayesfuse as bf
from bayesfuse.metrics import concordance_harrell

C = H.C


def cox_c(a, b, tr_t, tr_e, grid, t, e, seed):
    """Harrell C of the zoo's CV-penalised CoxPH fitted on the columns of ``a`` (train) and scored on ``b``."""
    cols = [f"f{i}" for i in range(a.shape[1])]
    risk, *_ = C.run_cox(pd.DataFrame(a, columns=cols), pd.DataFrame(b, columns=cols), tr_t, tr_e, grid, t, seed=seed)
    return concordance_harrell(t, e, risk)


def one(row, seed):
    train, test, _ = H.zoo.make_split(row, seed, C.DATA)
    test_eval, t, e, tr_ok, tr_t, tr_e, grid = C.eval_setup(train, test)
    trn = train.subset(ids=train.sample_ids[tr_ok])
    head = bf.heads.Survival(time="time", event="event", nonpositive_times="drop")
    model = bf.FusionModel(trn, heads={"survival": head})
    model.fit(seed=seed, progress=False)
    _, risk_bf, _ = C.post_outputs(model.predict(test_eval, num_samples=200, seed=seed), grid, t)
    xtr, xte = C.baseline_features(trn, test_eval)
    rec = {"row": row.name, "seed": seed, "bayesfuse": concordance_harrell(t, e, risk_bf)}
    cr, *_ = C.run_cox(xtr, xte, tr_t, tr_e, grid, t, seed=seed)
    rec["cox_genes"] = concordance_harrell(t, e, cr)
    rec["cox_z"] = cox_c(model.latent(trn).mean, model.latent(test_eval).mean, tr_t, tr_e, grid, t, e, seed)
    sc = StandardScaler().fit(xtr)
    a, b = sc.transform(xtr), sc.transform(xte)
    for k in (8, 32):
        pca = PCA(k, random_state=0).fit(a)
        rec[f"cox_pc{k}"] = cox_c(pca.transform(a), pca.transform(b), tr_t, tr_e, grid, t, e, seed)
    return rec


def main():
    seeds = [int(s) for s in sys.argv[1].split(",")]
    out = []
    for row in H.rows(sys.argv[2:] or ["surv:nsbcd*", "surv:dlbcl*"]):
        for seed in seeds:
            out.append(one(row, seed))
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out[-1].items()}, flush=True)
    print(pd.DataFrame(out).groupby("row").mean(numeric_only=True).round(3).to_string())


if __name__ == "__main__":
    main()
