"""Deep ensemble of K default survival fits (pooled draws, ``bayesfuse.model.ensemble.DeepEnsemble``) on zoo rows
(study, 2026-12-08; not maintained).

    python studies/wide_survival/ensemble.py K TAG FIT_KWARGS_JSON SEEDS [ROW_PATTERNS...]
    e.g. python studies/wide_survival/ensemble.py 5 ens5 '{}' 0,1,2 'surv:*resplit'

Writes benchmarks/results/zoo_TAG.json.
"""

from __future__ import annotations

import json
import sys

import _harness as H
import numpy as np

import bayesfuse as bf
from bayesfuse.model.ensemble import DeepEnsemble


def main():
    k, tag, fk = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    seeds = [int(s) for s in sys.argv[4].split(",")]

    def fit_predict(train, test_eval, seed, extra):
        head = bf.heads.Survival(time="time", event="event", nonpositive_times="drop")
        ens = DeepEnsemble(train, K=k, heads={"survival": head}, bayesian="none").fit(seed=100 * seed, progress=False,
                                                                                      **fk)
        extra["epochs"] = float(np.mean([len(m.history_) for m in ens.members_]))
        return ens.predict(test_eval, num_samples=200, seed=seed)

    H.run(tag, sys.argv[5:], seeds, fit_predict)


if __name__ == "__main__":
    main()
