"""`bayesfuse demo`: simulate a cohort, fit, predict, print a results table, write a report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["run_demo"]


def run_demo(out: str | Path = "bayesfuse_demo", quick: bool | None = None, seed: int = 0,
             progress: bool = True) -> pd.DataFrame:
    """Run the built-in demo on the simulator and return the results table.

    Writes ``metrics.csv``, ``metrics.json``, ``predictions.csv``, ``reliability_<head>.png``
    and ``intervals_<head>.png`` to ``out``. The table gives, beside the ECE, the ECE a perfectly
    calibrated model would have at these confidences (``ece_if_calibrated``, the consistency-resampling
    null mean) and its p-value (``ece_p``). ``quick`` (default: on when the ``CI``
    environment variable is set) trains fewer epochs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bayesfuse as bf
    from bayesfuse._labels import label_codes
    from bayesfuse.evaluation.classification import evaluate_classification
    from bayesfuse.metrics import ece_consistency
    from bayesfuse.plotting import class_probability_intervals, reliability_diagram

    quick = bool(os.environ.get("CI")) if quick is None else quick
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # 800 training patients and 1,200 test patients: on a test set of ~200 a perfectly calibrated model's
    # top-label ECE is itself ~0.07 (the consistency null below), too noisy to show calibration
    data, truth = bf.datasets.simulate(n_patients=2000, missing_rate=0.2, test_fraction=0.6, seed=seed)
    train, test = data.subset(split="train"), data.subset(split="test")
    heads = {"subtype": "categorical", "origin": "categorical"}
    model = bf.FusionModel(train, heads=heads, latent_dim=8)
    t0 = time.perf_counter()
    model.fit(max_epochs=40 if quick else 300, seed=seed, progress=progress)
    fit_s = time.perf_counter() - t0
    post = model.predict(test, num_samples=100 if quick else 500, seed=seed)
    rows_test = np.flatnonzero(data.targets["split"].to_numpy() == "test")
    table = []
    for head in heads:
        m = evaluate_classification(post, test.targets[head], head)
        y_codes = label_codes(test.targets[head].to_numpy(), post.classes(head))
        null = ece_consistency(post.mean_probs(head).to_numpy(), y_codes, n_resamples=500, seed=seed)
        oracle = truth.class_probs[head][rows_test]
        y = test.targets[head].to_numpy()
        oracle_acc = float((label_codes(np.asarray(truth.classes[head])[oracle.argmax(1)], post.classes(head)) == label_codes(y, post.classes(head))).mean())
        table.append({"head": head, "n_test": m.n, "accuracy": m.accuracy, "macro_f1": m.macro_f1, "nll": m.nll,
                      "brier": m.brier, "ece": m.ece, "ece_if_calibrated": null.null_mean, "ece_p": null.p_value,
                      "temperature": model.class_calibration_[head].pooled if head in model.class_calibration_
                      else 1.0, "oracle_accuracy_given_z": oracle_acc})
        fig, ax = plt.subplots(figsize=(4, 4))
        codes = label_codes(y, post.classes(head))
        reliability_diagram(post.mean_probs(head).to_numpy(), codes, ax=ax)
        ax.set_title(f"Reliability: {head}")
        fig.savefig(out / f"reliability_{head}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        class_probability_intervals(post.probs(head)[:, :6], post.classes(head), list(post.sample_ids[:6]), ax=ax)
        ax.set_title(f"90% credible intervals of p({head} | x), first 6 test patients")
        fig.savefig(out / f"intervals_{head}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    table = pd.DataFrame(table).set_index("head")
    table.to_csv(out / "metrics.csv")
    summary = {"fit_seconds": fit_s, "epochs": len(model.history_), "n_train": train.n_samples,
               "n_test": test.n_samples, "missingness": data.missingness_patterns().to_dict(),
               "metrics": table.reset_index().to_dict(orient="records")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    post.summary().to_csv(out / "predictions.csv", index=False)
    return table
