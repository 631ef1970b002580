"""Thread safety: one fitted model predicting / imputing from 4 threads at once gives the serial draws."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

import bayesfuse as bf

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _data():
    frames = {m: pd.read_csv(FIXTURES / f"cohort_{m}.csv", index_col=0) for m in ("expr", "mut")}
    t = pd.read_csv(FIXTURES / "cohort_targets.csv", index_col=0)
    for f in (*frames.values(), t):
        f.index = f.index.astype(str)
    return bf.MultiModalData.from_frames(frames, targets=t)


def test_predict_and_impute_from_four_threads_equal_serial_calls():
    model = bf.FusionModel.load(FIXTURES / "model_v2", device="cpu")
    data = _data()
    seeds = [0, 1, 2, 3] * 3

    def pred(seed):
        post = model.predict(data, num_samples=30, seed=seed)
        return post.probs("subtype"), post.latent

    def imp(seed):
        return model.impute(data, num_samples=10, seed=seed).draws["expr"]

    serial = [pred(s) for s in seeds]
    serial_imp = [imp(s) for s in seeds[:4]]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(pred, seeds))
        parallel_imp = list(pool.map(imp, seeds[:4]))
    for (p1, z1), (p2, z2) in zip(serial, parallel):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(z1, z2)
    for a, b in zip(serial_imp, parallel_imp):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(serial[0][0], serial[1][0])   # different seeds do differ
