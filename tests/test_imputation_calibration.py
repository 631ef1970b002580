"""Post-hoc recalibration of imputations (FusionModel.calibrate_imputation, posterior/imputation_calibration.py).

Positive control: a linear-Gaussian model whose decoder of modality b is deliberately
over-dispersed (its loadings multiplied by K = 2.5, so the predictive mean moves K times too far
from the training mean): the recalibration must find a slope ~ 1/K, lower the RMSE to that of the
exact conditional and restore 90% coverage. Negative control: the exactly specified model
(decoder = truth): slope ~ 1, spread ~ 1, RMSE unchanged. All float64, seeded.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from _linear_gaussian import analytic_model, exact_conditional, simulate  # tests/ helper

import bayesfuse as bf
from bayesfuse.exceptions import DataError, NoModalityWarning
from bayesfuse.posterior.imputation_calibration import (
    fit_imputation_recalibration,
    recentre,
    shrinkage_slopes,
)

K = 2.5   # over-dispersion of the misspecified decoder of b


def _simulate(n: int, seed: int) -> dict[str, pd.DataFrame]:
    return simulate(n, seed, id_prefix=f"p{seed}_")[0]


def _analytic_model(inflate: float = 1.0) -> bf.FusionModel:
    """Exact linear-Gaussian maps (preprocessing on 2000 patients); decoder b loadings x ``inflate``."""
    return analytic_model(n_fit=2000, inflate=inflate)


def _score(model: bf.FusionModel, frames: dict[str, pd.DataFrame], calibrated: bool) -> tuple[float, float]:
    """RMSE (pooled over cells) and 90% coverage of b imputed from a."""
    imp = model.impute(bf.MultiModalData.from_frames({"a": frames["a"]}), modalities=["b"], num_samples=400,
                       seed=2, calibrated=calibrated)
    truth = frames["b"].to_numpy()
    lo, hi = imp.interval("b", 0.9)
    rmse = float(np.sqrt(((imp.mean("b").to_numpy() - truth) ** 2).mean()))
    cov = float(((truth >= lo.to_numpy()) & (truth <= hi.to_numpy())).mean())
    return rmse, cov


def _exact_rmse(frames: dict[str, pd.DataFrame]) -> float:
    mu, _ = exact_conditional(frames["a"].to_numpy())
    return float(np.sqrt(((mu - frames["b"].to_numpy()) ** 2).mean()))


@pytest.fixture(scope="module")
def calib_frames():
    return _simulate(400, seed=5)


@pytest.fixture(scope="module")
def heldout_frames():
    return _simulate(1000, seed=9)


def test_overdispersed_decoder_is_recalibrated(calib_frames, heldout_frames):
    """Positive control: slope ~ 1/K, RMSE falls to the exact conditional's, coverage restored."""
    model = _analytic_model(inflate=K)
    rmse0, cov0 = _score(model, heldout_frames, calibrated=False)
    rec = model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities="b")["b"]
    assert rec.mode == "global" and rec.n_patients == 400
    # In decoder space the over-dispersed mean is ~K x the exact one (bias ~ 0): slope ~ 1/K = 0.4.
    assert abs(rec.pooled_slope - 1 / K) < 0.05, rec
    rmse1, cov1 = _score(model, heldout_frames, calibrated=True)
    exact = _exact_rmse(heldout_frames)
    assert rmse0 > 1.3 * exact                          # the misspecification is large ...
    assert rmse1 < 0.8 * rmse0 and rmse1 < 1.03 * exact  # ... and removed
    assert cov0 < 0.85 and abs(cov1 - 0.9) < 0.03, (cov0, cov1)
    assert abs(rec.diagnostics["coverage_after"] - 0.9) < 0.01
    assert model.impute(bf.MultiModalData.from_frames({"a": heldout_frames["a"]}), modalities=["b"],
                        num_samples=5).extra["recalibrated"] == ["b"]


def test_correct_model_is_left_unchanged(calib_frames, heldout_frames):
    """Negative control: on the exact model the slope and spread stay ~ 1 and the RMSE does not move."""
    model = _analytic_model(inflate=1.0)
    rmse0, cov0 = _score(model, heldout_frames, calibrated=False)
    recs = model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities=["b"], mode="auto")
    rec = recs["b"]
    assert abs(rec.pooled_slope - 1.0) < 0.06, rec
    np.testing.assert_allclose(rec.slope, 1.0, atol=0.08)
    assert abs(rec.spread - 1.0) < 0.1, rec
    rmse1, cov1 = _score(model, heldout_frames, calibrated=True)
    assert abs(rmse1 - rmse0) < 0.01 * rmse0
    assert abs(cov0 - 0.9) < 0.02 and abs(cov1 - 0.9) < 0.03
    assert set(rec.cv_mse) == {"none", "global", "feature"}


def test_observed_cells_and_present_patients_are_not_recalibrated(calib_frames, heldout_frames):
    model = _analytic_model(inflate=K)
    model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities="b")
    full = bf.MultiModalData.from_frames({m: f.iloc[:50] for m, f in heldout_frames.items()})
    imp = model.impute(full, modalities=["b"], num_samples=20, seed=1)
    np.testing.assert_array_equal(imp["b"], np.broadcast_to(heldout_frames["b"].iloc[:50].to_numpy(), (20, 50, 3)))
    # reconstruct=True for patients that HAVE b: the uncalibrated draws (the recalibration is cross-modal only)
    a = model.impute(full, modalities=["b"], num_samples=20, seed=1, reconstruct=True)
    b = model.impute(full, modalities=["b"], num_samples=20, seed=1, reconstruct=True, calibrated=False)
    np.testing.assert_array_equal(a["b"], b["b"])
    assert a.extra["recalibrated"] == ["b"] and b.extra["recalibrated"] == []


def test_save_load_round_trip_and_old_format(calib_frames, heldout_frames, tmp_path):
    model = _analytic_model(inflate=K)
    model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities="b", mode="feature")
    model.save(tmp_path / "m")
    loaded = bf.FusionModel.load(tmp_path / "m", device="cpu")
    rec, rec2 = model.imputation_calibration_["b"], loaded.imputation_calibration_["b"]
    np.testing.assert_array_equal(rec.slope, rec2.slope)
    assert (rec2.spread, rec2.mode, rec2.n_patients) == (rec.spread, "feature", 400)
    data = bf.MultiModalData.from_frames({"a": heldout_frames["a"].iloc[:30]})
    x1 = model.impute(data, modalities=["b"], num_samples=50, seed=4)["b"]
    np.testing.assert_array_equal(x1, loaded.impute(data, modalities=["b"], num_samples=50, seed=4)["b"])
    raw = loaded.impute(data, modalities=["b"], num_samples=50, seed=4, calibrated=False)["b"]
    assert np.abs(raw - x1).max() > 0.1   # the calibration is really applied after loading
    # A version-1 file (written before the recalibration existed) still loads, without one.
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format_version"] == 3
    cfg["format_version"] = 1
    cfg.pop("class_calibration", None)
    del cfg["imputation_calibration"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    old = bf.FusionModel.load(tmp_path / "m", device="cpu")
    assert old.imputation_calibration_ == {}
    np.testing.assert_array_equal(old.impute(data, modalities=["b"], num_samples=50, seed=4)["b"], raw)


def test_input_validation(calib_frames):
    model = _analytic_model(inflate=K)
    with pytest.raises(DataError, match="early-stopping validation patients"):
        model.calibrate_imputation()                      # no training data / validation split attached
    only_a = bf.MultiModalData.from_frames({"a": calib_frames["a"]})
    with pytest.raises(DataError, match="No calibration patient has modality 'b'"):
        model.calibrate_imputation(only_a, modalities="b")
    few = bf.MultiModalData.from_frames({m: f.iloc[:8] for m, f in calib_frames.items()})
    with pytest.raises(ValueError, match="needs at least min_patients=10"):
        model.calibrate_imputation(few, modalities="b")
    with pytest.raises(ValueError, match="mode="):
        model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), mode="per-gene")
    with pytest.raises(ValueError, match="calibrate_imputation"):
        model.impute(only_a, modalities=["b"], num_samples=3, calibrated=True)
    with pytest.raises(DataError, match="not one of the model's"):
        model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities="c")
    # Patients who have only b are left out with a warning; 20 patients -> "noisy" warning.
    mixed = bf.MultiModalData.from_frames({"a": calib_frames["a"].iloc[:20], "b": calib_frames["b"].iloc[:25]})
    with pytest.warns(NoModalityWarning, match="have only 'b'"), pytest.warns(UserWarning, match="noisy"):
        rec = model.calibrate_imputation(mixed, modalities="b")["b"]
    assert rec.n_patients == 20


def test_fitted_model_uses_its_validation_patients_and_rejects_binary():
    rng = np.random.default_rng(0)
    n = 150
    z = rng.standard_normal((n, 2))
    ids = [f"s{i}" for i in range(n)]
    frames = {"g": pd.DataFrame(z @ rng.standard_normal((2, 6)) + 0.5 * rng.standard_normal((n, 6)), index=ids),
              "m": pd.DataFrame((z @ rng.standard_normal((2, 5)) + rng.standard_normal((n, 5)) > 0).astype(float),
                                index=ids)}
    frames = {k: v.rename(columns=lambda j, k=k: f"{k}{j}") for k, v in frames.items()}
    model = bf.FusionModel(bf.MultiModalData.from_frames(frames), latent_dim=2, hidden=8, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(max_epochs=3, progress=False, seed=0)
    assert model.transforms["m"].likelihood == "bernoulli"
    with pytest.warns(UserWarning, match="noisy"):
        recs = model.calibrate_imputation()               # the 15 early-stopping patients
    assert list(recs) == ["g"] and recs["g"].n_patients == model.train_config_["n_validation"] == 15
    with pytest.raises(ValueError, match="Gaussian modalities only"):
        model.calibrate_imputation(modalities="m")
    model.fit(max_epochs=3, progress=False, seed=0)
    assert model.imputation_calibration_ == {}            # a refit drops the old recalibration


def test_shrinkage_slopes_pool_or_keep_features():
    """EB pooling: equal true slopes -> tau2 ~ 0 and shrunk = pooled; very different slopes -> kept."""
    rng = np.random.default_rng(3)
    n, f = 200, 20
    mu = rng.standard_normal((n, f))
    same = 0.4 * mu + rng.standard_normal((n, f))
    raw, pooled, tau2, shrunk = shrinkage_slopes(same, mu)
    assert abs(pooled - 0.4) < 0.05
    assert np.std(shrunk) < 0.5 * np.std(raw)             # pooled towards the common slope
    true = np.linspace(-0.5, 1.5, f)
    diff = true * mu + 0.3 * rng.standard_normal((n, f))
    raw, pooled, tau2, shrunk = shrinkage_slopes(diff, mu)
    assert tau2 > 0.2
    np.testing.assert_allclose(shrunk, true, atol=0.1)
    # NaN truth cells are ignored; the fitted record never gives a negative slope.
    diff[:10, 0] = np.nan
    draws = mu[None] + rng.standard_normal((50, n, f))
    rec = fit_imputation_recalibration("x", diff, mu, draws, mode="feature")
    assert rec.slope.min() == 0.0 and np.isfinite(rec.spread)
    # recentre: draws average exactly to the given mean and keep their spread (ddof-1 sd).
    rc = recentre(draws, mu)
    np.testing.assert_allclose(rc.mean(0), mu, atol=1e-12)
    np.testing.assert_allclose(rc.std(0, ddof=0), draws.std(0, ddof=1), rtol=1e-10)


def test_recalibration_math_is_torch_free():
    """posterior/ never imports torch (docs/architecture.md)."""
    import subprocess
    import sys

    code = ("import sys, bayesfuse.posterior.imputation_calibration as m; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(m.SLOPE_MODES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_too_few_draws_are_refused_not_fitted(calib_frames):
    """Review fix: the spread scales the empirical central interval of the draws; with one draw that
    interval is a point, and the fit returned a spread of ~1e12 (coverage 0) without a word."""
    model = _analytic_model(inflate=K)
    data = bf.MultiModalData.from_frames(calib_frames)
    with pytest.raises(ValueError, match="num_samples=1"):
        model.calibrate_imputation(data, modalities="b", num_samples=1)
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((40, 3))
    with pytest.raises(ValueError, match="at least 2 draws"):
        fit_imputation_recalibration("x", mu + rng.standard_normal((40, 3)), mu, mu[None])
    # a few draws: their 90% interval is much narrower than that of many, so the spread fitted on
    # them would not carry over to impute(num_samples=200): warned
    with pytest.warns(UserWarning, match="num_samples=5"):
        rec = model.calibrate_imputation(data, modalities="b", num_samples=5)["b"]
    assert rec.spread > 1.5 * model.calibrate_imputation(data, modalities="b", num_samples=200)["b"].spread
    assert model.imputation_calibration_ == {"b": model.imputation_calibration_["b"]}


def test_refits_drop_the_recalibration(calib_frames, monkeypatch):
    """Review fix: every path that replaces the module drops a recalibration fitted on the old one
    (fit_distributed; a fit that fails half-way)."""
    from bayesfuse.model import fusion_model as fm
    from bayesfuse.model.distributed import fit_distributed

    data = bf.MultiModalData.from_frames(calib_frames)
    model = _analytic_model(inflate=K)
    model.calibrate_imputation(data, modalities="b")
    assert list(model.imputation_calibration_) == ["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_distributed(model, max_epochs=1, batch_size=500, kl_warmup_epochs=1)
    assert model.imputation_calibration_ == {}

    model.module = _analytic_model(inflate=K).module
    model.calibrate_imputation(data, modalities="b")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fm, "train_svi", boom)
    with pytest.raises(KeyboardInterrupt):
        model.fit(max_epochs=1, progress=False)
    assert model.imputation_calibration_ == {}   # the new, untrained module has no recalibration


def test_patients_without_an_observed_value_do_not_count():
    """Review fix: calibration rows whose cells are all NaN carry no information; with no observed
    cell at all the fit returned slope 1, spread 1 and NaN diagnostics (saved as null, which broke
    a re-save after loading) instead of refusing."""
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((40, 3))
    draws = mu[None] + rng.standard_normal((20, 40, 3))
    truth = 0.5 * mu + rng.standard_normal((40, 3))
    truth[:35] = np.nan                                   # 5 patients with a value
    with pytest.raises(ValueError, match="Only 5 calibration patient"):
        fit_imputation_recalibration("x", truth, mu, draws)
    with pytest.raises(ValueError, match="Only 0 calibration patient"):
        fit_imputation_recalibration("x", np.full((40, 3), np.nan), mu, draws)
    truth[:20] = 0.5 * mu[:20] + rng.standard_normal((20, 3))
    rec = fit_imputation_recalibration("x", truth, mu, draws, mode="auto")
    assert rec.n_patients == 25 and all(np.isfinite(v) for v in rec.diagnostics.values())


def test_explicit_calibrated_warns_for_uncovered_modalities(calib_frames, heldout_frames):
    """Review fix: impute(calibrated=True) was silent for a Gaussian modality without a recalibration."""
    model = _analytic_model(inflate=K)
    model.calibrate_imputation(bf.MultiModalData.from_frames(calib_frames), modalities="b")
    only_a = bf.MultiModalData.from_frames({"a": heldout_frames["a"].iloc[:20]})
    only_b = bf.MultiModalData.from_frames({"b": heldout_frames["b"].iloc[:20]})
    with pytest.warns(UserWarning, match=r"no recalibration was fitted for Gaussian modality \['a'\]"):
        imp = model.impute(only_b, modalities=["a", "b"], num_samples=3, calibrated=True)
    assert imp.extra["recalibrated"] == ["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # default (None) and covered-only requests stay quiet
        model.impute(only_b, modalities=["a", "b"], num_samples=3)
        model.impute(only_a, modalities=["b"], num_samples=3, calibrated=True)
