"""Real-data acceptance (../shared/data; skipped cleanly when absent).

bayesfuse must match or beat L2 logistic regression on the concatenated, scaled
modalities, measured in the same run on the same split:
* tcga_gbmlgg subtype, with the label-defining columns (IDH1, IDH2 mutations; 1p, 19q arm
  copy number) dropped as its README requires;
* tcga_rare6 origin from raw RNA-seq counts (baseline on log1p CPM of all genes).
"""

import numpy as np
import pandas as pd
import pytest
from conftest import dataset_dir
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

import bayesfuse as bf
from bayesfuse.evaluation import evaluate_classification

GBMLGG_LEAKAGE = {"mutation": ["IDH1", "IDH2"], "cnv_arm": ["1p", "19q"]}
pytestmark = pytest.mark.realdata


def _concat(data, transform=None):
    frames = []
    for m in data.modality_names:
        df = data.modality(m)
        frames.append((transform(df) if transform else df).add_prefix(f"{m}:"))
    return pd.concat(frames, axis=1).loc[data.sample_ids]


def _logreg(train, test, target, transform=None):
    xtr, xte = _concat(train, transform), _concat(test, transform)
    ytr, yte = train.targets[target], test.targets[target]
    ktr, kte = ytr.notna().to_numpy(), yte.notna().to_numpy()
    sc = StandardScaler().fit(xtr[ktr])
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(sc.transform(xtr[ktr]), ytr[ktr])
    pred = clf.predict(sc.transform(xte[kte]))
    return accuracy_score(yte[kte], pred), f1_score(yte[kte], pred, average="macro")


def _assert_beats_logreg(train, test, target, lr_acc, lr_f1, **model_kw):
    model = bf.FusionModel(train, heads={target: "categorical"}, **model_kw)
    model.fit(seed=0, progress=False)
    post = model.predict(test, num_samples=200)
    m = evaluate_classification(post, test.targets[target], target)
    print(f"\n{target}: bayesfuse acc {m.accuracy:.3f} F1 {m.macro_f1:.3f} NLL {m.nll:.3f} ECE {m.ece:.3f} "
          f"| logistic regression acc {lr_acc:.3f} F1 {lr_f1:.3f} | fit {model.fit_seconds_:.1f}s")
    assert m.accuracy >= lr_acc - 1e-9, (m, lr_acc)
    assert m.macro_f1 >= lr_f1 - 1e-9, (m, lr_f1)
    assert np.isfinite(m.nll) and m.ece < 0.1
    return m


def test_gbmlgg_subtype_beats_logistic_regression():
    data = bf.MultiModalData.read_dir(dataset_dir("tcga_gbmlgg"), drop_features=GBMLGG_LEAKAGE)
    for m, cols in GBMLGG_LEAKAGE.items():
        assert not set(cols) & set(data.features(m))
    train, test = data.subset(split="train"), data.subset(split="test")
    lr_acc, lr_f1 = _logreg(train, test, "subtype")
    _assert_beats_logreg(train, test, "subtype", lr_acc, lr_f1, latent_dim=16)


def test_rare6_origin_beats_logistic_regression():
    data = bf.MultiModalData.read_dir(dataset_dir("tcga_rare6"))
    train, test = data.subset(split="train"), data.subset(split="test")

    def log_cpm(df):
        return np.log1p(df.div(df.sum(axis=1), axis=0) * 1e6)

    lr_acc, lr_f1 = _logreg(train, test, "origin", transform=log_cpm)
    _assert_beats_logreg(train, test, "origin", lr_acc, lr_f1, latent_dim=16)
