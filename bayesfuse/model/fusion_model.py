"""`FusionModel`: the user-facing class (scvi-tools style: data registration, fit, predict).

This is the only layer that turns DataFrames into tensors and back. The math lives in
:mod:`bayesfuse.module`, the optimisation loop in :mod:`bayesfuse.train`, and outputs are
plain-array :class:`bayesfuse.Posterior` objects.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesfuse._rng import seeded_rng
from bayesfuse._settings import dtype_name, resolve_device, resolve_dtype, seed_everything
from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.data.preprocessing import ModalityTransform
from bayesfuse.exceptions import ArgumentError, DataError, InputTypeError, NoModalityWarning, NotFittedError
from bayesfuse.heads import Categorical, Head, Survival, make_head
from bayesfuse.model.advanced import AdvancedConfig
from bayesfuse.model.fit_reliability import fit_reliability_options
from bayesfuse.model.targets import encode_targets, fit_head_spec
from bayesfuse.module.batch import TensorStore
from bayesfuse.module.fusion_module import FusionModule
from bayesfuse.module.head_factory import build_head_module
from bayesfuse.module.heads import temper_probs
from bayesfuse.posterior.imputation import Imputation
from bayesfuse.posterior.posterior import Posterior
from bayesfuse.train.svi import COMPILE_MODES, MONITORS, TrainConfig, train_svi

__all__ = ["FusionModel"]

#: with ``fit(validation_fraction="auto")`` a model with a categorical head holds out about this many
#: patients (if that is at most ``MAX_AUTO_VALIDATION`` of them; the stratified split rounds per class): they
#: fit the modality reliabilities and the temperatures, which 10 patients (0.1 of a 100-patient cohort)
#: cannot pin down
MIN_CALIBRATION_PATIENTS = 40
#: the largest share ``"auto"`` holds out
MAX_AUTO_VALIDATION = 0.2
#: the share ``"auto"`` holds out otherwise (and always for models without a categorical head)
BASE_VALIDATION = 0.1


def auto_validation_fraction(n_patients: int, has_categorical: bool) -> float:
    """Share of ``n_patients`` that ``fit(validation_fraction="auto")`` holds out.

    ``0.1``; with a categorical head ``clip(40 / n, 0.1, 0.2)``: 0.2 up to 200 patients, 0.1 from 400
    on. Measured on the cohort zoo (docs/model.md, "Validation share"): 23 of 29 classification rows
    pass the issue-14 rule against 20 with 0.1; survival-only models lose with a larger share, so they
    keep 0.1.
    """
    if not has_categorical or n_patients <= 0:
        return BASE_VALIDATION
    return float(np.clip(MIN_CALIBRATION_PATIENTS / n_patients, BASE_VALIDATION, MAX_AUTO_VALIDATION))


#: ``fit(early_stopping="auto")`` monitors the survival head of a survival-only model whose modalities have at
#: least this many features per training patient in all
WIDE_SURVIVAL_RATIO = 2


def auto_early_stopping(n_features: int, n_patients: int, has_categorical: bool, has_survival: bool) -> str:
    """Validation criterion of ``fit(early_stopping="auto")``: ``"heads"`` or ``"elbo"``.

    ``"heads"`` for a model with a categorical head, and for a survival model without one whose
    modalities hold at least twice as many features (after ``max_features`` selection) as it has
    training patients (gene-expression cohorts: hundreds to thousands of genes, 100-400 patients);
    ``"elbo"`` otherwise. Measured on the cohort zoo's 31 survival rows (docs/model.md, "Early stopping of
    survival-only models"): on the 9 rows with ``features >= 2 x patients`` the heads' criterion raised
    Harrell C by 0.022 on average (dbcd 0.679 -> 0.736, nsbcd 0.668 -> 0.726, cll/full 0.610 -> 0.667),
    while on the clinical cohorts (6-14 features) it lowered the D-calibration p-value on 8 of 12 rows.
    """
    if has_categorical:
        return "heads"
    if has_survival and n_patients > 0 and n_features >= WIDE_SURVIVAL_RATIO * n_patients:
        return "heads"
    return "elbo"


#: ``latent_dim="auto"``: the latent size of every model but the one below
BASE_LATENT_DIM = 16
#: ``latent_dim="auto"``: a survival model without a categorical head whose modalities have at least
#: twice this many features in all
SURVIVAL_LATENT_DIM = 32


def auto_latent_dim(n_features: int, has_categorical: bool, has_survival: bool) -> int:
    """Latent size ``D`` of ``FusionModel(latent_dim="auto")``.

    32 for a model with a survival head, no categorical head and at least 64 features over its
    modalities (after ``max_features`` selection); 16 otherwise. Measured on the cohort zoo (docs/model.md,
    "Latent size"): 32 raised survival-only models' Harrell C on the omics cohorts (80-400 features;
    gse7390/n100 0.682 -> 0.780) and on the simulator rows, but on the clinical cohorts (6-14 features,
    fewer than the latent dimensions already) it left C unchanged and lowered the D-calibration p-value
    on 9 of 12 rows; with a categorical head 32 and 8 both passed fewer rows than 16.
    """
    if has_survival and not has_categorical and n_features >= 2 * SURVIVAL_LATENT_DIM:
        return SURVIVAL_LATENT_DIM
    return BASE_LATENT_DIM


#: ``survival_refit`` option -> keyword arguments of :func:`refit_module_survival_heads`
_SURVIVAL_REFIT_ARGS = {"laplace": {"family": "laplace", "center": "fitted"},
                        "laplace_mode": {"family": "laplace", "center": "mode", "steps": 600},
                        "meanfield": {"family": "meanfield", "steps": 600}}


def _is_categorical(key, spec) -> bool:
    """Whether a ``heads=`` entry (a string or a Head) is a categorical head (False if malformed: the
    head's own validation reports it)."""
    try:
        return isinstance(make_head(key, spec), Categorical)
    except (ValueError, TypeError):   # ArgumentError / InputTypeError: reported by the head's own check later
        return False


def _check_not_empty(data) -> None:
    """Refuse a cohort without patients (e.g. ``data.subset(ids=[])``) before any tensor work."""
    if isinstance(data, MultiModalData) and data.n_samples == 0:
        raise DataError("data has no patients (0 samples, e.g. an empty subset); pass at least one patient.")


class FusionModel:
    """Bayesian multimodal fusion model: per-modality Gaussian experts fused by a product of
    experts (prior included), decoders per modality, and supervised heads on the latent ``z``.

    Parameters
    ----------
    data : MultiModalData
        Training cohort. Preprocessing (scaling, transforms, feature order, class labels) is
        fitted on it here and saved with the model.
    heads : dict[str, str | bayesfuse.heads.Head], optional
        Heads keyed by target column, e.g. ``{"subtype": "categorical"}`` or
        ``{"survival": bf.heads.Survival(time="time", event="event")}``. Empty = unsupervised.
    latent_dim : int or "auto"
        Dimension ``D`` of the shared latent. ``"auto"`` (default): 16, and 32 for a survival model
        without a categorical head whose modalities have at least 64 features in all
        (:func:`auto_latent_dim`, chosen on the cohort zoo).
    hidden : int
        Hidden width of encoders and decoders (0 = linear maps).
    likelihoods : dict[str, str], optional
        Override the automatically chosen decoder likelihood per modality
        (``"gaussian"``, ``"bernoulli"``, ``"poisson"``, ``"negbinom"``).
    max_features : int or dict[str, int], optional
        Keep at most this many top-variance features per modality (count modalities default
        to 2000; others keep all unless set).
    encoder_dropout : float or "auto"
        Dropout inside the encoders during training. ``"auto"`` (default): 0.3 for a model with
        heads, chosen on the cohort zoo (docs/model.md, "Defaults chosen on the cohort zoo":
        against 0.1, mean accuracy over the 18 real-cohort rows 0.926 vs 0.916, NLL 0.235 vs
        0.243, ECE 0.062 vs 0.064); 0.1 without heads, where imputation is the output and 0.3
        widened the 50% imputation intervals (coverage 0.586, tests/test_imputation_quality.py).
    device : {"auto", "cpu", "cuda", ...}
        ``"auto"`` = CUDA when available.
    dtype : {"float32", "float64"}
    bayesian : {"none", "heads", "encoders+heads", "all", "mc_dropout"}
        Weight uncertainty (see docs/bayesian.md). ``"none"`` (default): point-estimate
        categorical heads (posterior uncertainty comes from ``z``; survival heads are always
        Bayesian); ``"heads"``: Gaussian posterior over categorical-head weights (the
        recommended Bayesian model, docs/bayesian.md: lower ECE than ``"none"`` on the test
        splits of tcga_gbmlgg and tcga_rare6, NLL within one seed-sd); ``"encoders+heads"`` /
        ``"all"``: also Bayesian encoders (/ decoders) by local reparameterisation (see
        ``encoder_layers``); ``"mc_dropout"``: deterministic weights, encoder dropout kept on at
        prediction.
    prior_scale : float
        Prior standard deviation of every Bayesian weight. Default 1.0, chosen by 4-fold
        cross-validation on the training splits of tcga_gbmlgg and tcga_rare6 (mean CV NLL 0.096
        vs 0.102 for prior sd 3; sd 3 makes rare errors confidently wrong, docs/bayesian.md).
    advanced : AdvancedConfig, optional
        Expert options no default changes (head guide family, Bayesian encoder layers, post-fit
        refits of the head posteriors): :class:`bayesfuse.AdvancedConfig`.

    Attributes
    ----------
    transforms : dict[str, ModalityTransform]
        Train-fitted preprocessing per modality.
    heads : dict[str, Head]
        Head specifications with fitted class labels / time grids.
    history_ : pandas.DataFrame
        Per-epoch ``train_loss`` (negative ELBO, nats per patient), ``val_loss`` (the early-stopping
        criterion, nats per patient: see ``fit(early_stopping=)``), ``kl_scale``.
    best_epoch_, fit_seconds_, stopped_early_ : set by :meth:`fit`.
    diagnostics_ : bayesfuse.diagnostics.VIDiagnostics or None
        After :meth:`fit` of a model with Bayesian heads: PSIS k-hat of the head-weight guide.
    """

    _STORE_CHUNK = 8192  # rows per preprocessing chunk in _store (bounds host temporaries)
    _STORE_CHUNK_CELLS = 1 << 21  # ... and at most this many cells (16 MiB of float64) per chunk
    _NOISE_BLOCK = 256  # patients per block of posterior noise in predict (fixes the RNG stream)

    def __init__(self, data: MultiModalData, heads: Mapping[str, str | Head] | None = None, latent_dim: int | str = "auto",
                 hidden: int = 128, likelihoods: Mapping[str, str] | None = None,
                 max_features: int | Mapping[str, int] | None = None, encoder_dropout: float | str = "auto",
                 device: str = "auto", dtype: str = "float32", bayesian: str = "none", prior_scale: float = 1.0,
                 advanced: AdvancedConfig | None = None):
        if not isinstance(data, MultiModalData):
            raise InputTypeError("data must be a bf.MultiModalData (use MultiModalData.from_frames or read_dir).")
        if not data.modality_names:
            raise DataError("data has no modality; a fusion model needs at least one.")
        if not (latent_dim == "auto" or (isinstance(latent_dim, numbers.Integral) and not isinstance(latent_dim, bool)
                                         and int(latent_dim) >= 1)):
            raise ArgumentError(f"latent_dim={latent_dim!r} must be 'auto' or an integer >= 1.")
        self.hidden = int(hidden)
        if encoder_dropout == "auto":   # 0.3 with a categorical head (cohort zoo); 0.1 otherwise
            encoder_dropout = 0.3 if any(_is_categorical(k, v) for k, v in dict(heads or {}).items()) else 0.1
        if isinstance(encoder_dropout, str) or not 0 <= float(encoder_dropout) < 1:
            raise ArgumentError(f"encoder_dropout={encoder_dropout!r} must be 'auto' or a number in [0, 1).")
        self.encoder_dropout = float(encoder_dropout)
        adv = AdvancedConfig() if advanced is None else advanced
        if not isinstance(adv, AdvancedConfig):
            raise InputTypeError(f"advanced= must be a bf.AdvancedConfig, got {type(adv).__name__}; e.g. "
                                 "advanced=bf.AdvancedConfig(survival_refit='none').")
        self._set_bayesian(bayesian, prior_scale, adv.head_guide, adv.guide_rank, adv.encoder_layers,
                           adv.head_refit_steps)
        self._set_survival_refit(adv.survival_refit)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        likelihoods = dict(likelihoods or {})
        unknown = set(likelihoods) - set(data.modality_names)
        if unknown:
            raise DataError(f"likelihoods= names unknown modalities {sorted(unknown)}; modalities are "
                            f"{data.modality_names}.")
        self.transforms: dict[str, ModalityTransform] = {}
        for m in data.modality_names:
            mf = max_features.get(m) if isinstance(max_features, Mapping) else max_features
            self.transforms[m] = ModalityTransform.fit(m, data._modality_frame(m), likelihoods.get(m, "auto"), mf)
        self.heads: dict[str, Head] = {}
        for key, spec in dict(heads or {}).items():
            self.heads[key] = fit_head_spec(key, make_head(key, spec), data.targets,
                                            sum(tf.n_features for tf in self.transforms.values()))
            if getattr(self.heads[key], "covariates", None):  # survival head with a direct covariate path
                from bayesfuse.model.survival_targets import fit_survival_covariates  # noqa: PLC0415

                fit_survival_covariates(key, self.heads[key], self.transforms)
        if latent_dim == "auto":
            latent_dim = auto_latent_dim(sum(tf.n_features for tf in self.transforms.values()),
                                         any(isinstance(h, Categorical) for h in self.heads.values()),
                                         any(isinstance(h, Survival) for h in self.heads.values()))
        self.latent_dim = int(latent_dim)
        self._train_data = data
        self.module: FusionModule | None = None
        self.history_: pd.DataFrame | None = None
        self.train_config_: dict[str, Any] | None = None
        self.diagnostics_ = None
        self.imputation_calibration_: dict = {}   # modality -> ImputationRecalibration (calibrate_imputation)
        self.class_calibration_: dict = {}   # categorical head -> ClassCalibration (fit(calibrate=True))

    def _set_bayesian(self, bayesian: str, prior_scale: float, head_guide: str, guide_rank: int,
                      encoder_layers: str = "all", head_refit_steps: int = 0) -> None:
        from bayesfuse.module.bayesian_module import BAYESIAN_MODES  # noqa: PLC0415
        from bayesfuse.nn.bayesian import GUIDE_FAMILIES  # noqa: PLC0415

        if bayesian not in BAYESIAN_MODES:
            raise ArgumentError(f"bayesian={bayesian!r}; use one of {BAYESIAN_MODES}.")
        if bayesian == "mc_dropout" and not (self.encoder_dropout > 0 and self.hidden > 0):
            raise ArgumentError("bayesian='mc_dropout' needs encoder_dropout > 0 (e.g. 0.1) and hidden > 0 "
                             "(a linear encoder has no dropout layer).")
        if head_guide not in GUIDE_FAMILIES:
            raise ArgumentError(f"AdvancedConfig(head_guide={head_guide!r}); use one of {GUIDE_FAMILIES}.")
        if not float(prior_scale) > 0 or int(guide_rank) < 1:
            raise ArgumentError(f"prior_scale={prior_scale} must be > 0 and AdvancedConfig(guide_rank={guide_rank}) >= 1.")
        self.bayesian, self.prior_scale = bayesian, float(prior_scale)
        self.head_guide, self.guide_rank = head_guide, int(guide_rank)
        if encoder_layers not in ("last", "all") or int(head_refit_steps) < 0:
            raise ArgumentError(f"AdvancedConfig(encoder_layers={encoder_layers!r}) must be 'last' or 'all' and "
                                f"AdvancedConfig(head_refit_steps={head_refit_steps}) must be >= 0.")
        self.encoder_layers, self.head_refit_steps = encoder_layers, int(head_refit_steps)

    def _set_survival_refit(self, survival_refit: str) -> None:
        from bayesfuse.module.survival_refit import SURVIVAL_REFITS  # noqa: PLC0415

        if survival_refit not in SURVIVAL_REFITS:
            raise ArgumentError(f"AdvancedConfig(survival_refit={survival_refit!r}); use one of {SURVIVAL_REFITS} "
                                "('none' = off).")
        self.survival_refit = survival_refit

    # ---------------------------------------------------------------- tensors
    @property
    def modalities(self) -> list[str]:
        return list(self.transforms)

    def _store(self, data: MultiModalData, strict_targets: bool, ids: np.ndarray | None = None) -> TensorStore:
        """Device tensors for ``data`` (rows in ``data.sample_ids`` order, or the sample ids ``ids``:
        same as ``data.subset(ids=ids)`` without copying the modality tables)."""
        unknown = [m for m in data.modality_names if m not in self.transforms]
        if unknown:
            raise DataError(f"data has modalities {unknown} that the model was not trained on "
                            f"(model modalities: {self.modalities}); drop them with drop_modalities({unknown}).")
        ids = pd.Index(data.sample_ids if ids is None else np.asarray(ids, dtype=object))
        target_table = data.targets if len(ids) == data.n_samples and ids.equals(data.targets.index) \
            else data.targets.loc[ids]
        n = len(ids)
        kw = {"dtype": self.dtype, "device": self.device}
        enc, obs, mask, lib = {}, {}, {}, {}
        presence = np.zeros((len(self.modalities), n))
        for i, (m, tf) in enumerate(self.transforms.items()):
            # Rows are transformed in chunks straight into device tensors of the model dtype
            # (no whole-cohort float64 temporaries); a Gaussian modality's observed values equal
            # its encoder input and share the tensor; an all-observed cell mask is a broadcast view.
            f = tf.n_features
            chunk = max(1, min(self._STORE_CHUNK, self._STORE_CHUNK_CELLS // max(f, 1)))
            e = torch.zeros((n, f), **kw)
            o = e if tf.likelihood == "gaussian" else torch.zeros((n, f), **kw)
            c = torch.zeros((n, f), dtype=torch.bool)
            lb = torch.ones(n, dtype=torch.float64)
            if m in data.modality_names:
                df = data._modality_frame(m)  # no copy; only chunks of rows are copied
                pos = ids.get_indexer(df.index)
                sel = np.flatnonzero(pos >= 0)  # rows of df among the store's samples
                all_rows = pos[sel]
                for start in range(0, len(sel), chunk):
                    rows = torch.as_tensor(all_rows[start:start + chunk], dtype=torch.long)
                    arr = tf.transform(df.iloc[sel[start:start + chunk]])
                    e[rows.to(self.device)] = torch.as_tensor(arr.encoder_input, **kw)
                    if o is not e:
                        o[rows.to(self.device)] = torch.as_tensor(arr.observed, **kw)
                    c[rows] = torch.as_tensor(arr.cell_mask, dtype=torch.bool)
                    lb[rows] = torch.as_tensor(arr.library, dtype=torch.float64)
                presence[i, all_rows] = 1.0
            enc[m], obs[m] = e, o
            if bool(c.all()):  # every patient has the modality, every cell observed
                mask[m] = torch.ones((1, f), **kw).expand(n, f)
            else:
                mask[m] = c.to(**kw)
            lib[m] = lb.to(**kw)
        targets = {}
        for key, spec in self.heads.items():
            arrs = encode_targets(key, spec, target_table, n, strict_targets)
            targets[key] = {k: torch.as_tensor(v, device=self.device,
                                               dtype=torch.long if v.dtype.kind in "iu" else self.dtype)
                            for k, v in arrs.items()}
        return TensorStore(enc, obs, mask, lib, torch.as_tensor(presence, **kw), targets)

    def _build_module(self) -> FusionModule:
        heads = {k: build_head_module(spec, self.latent_dim) for k, spec in self.heads.items()}
        extra: dict[str, Any] = {}
        cls = FusionModule
        if getattr(self, "bayesian", "none") != "none":
            from bayesfuse.module.bayesian_module import BayesianFusionModule  # noqa: PLC0415

            cls = BayesianFusionModule
            extra = {"bayesian": self.bayesian, "prior_scale": self.prior_scale, "head_guide": self.head_guide,
                     "guide_rank": self.guide_rank, "encoder_layers": getattr(self, "encoder_layers", "all")}
        module = cls({m: tf.n_features for m, tf in self.transforms.items()},
                     {m: tf.likelihood for m, tf in self.transforms.items()}, self.latent_dim,
                     heads, hidden=self.hidden, encoder_dropout=self.encoder_dropout, **extra)
        return module.to(device=self.device, dtype=self.dtype)

    # -------------------------------------------------------------------- fit
    def fit(self, max_epochs: int = 300, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
            validation_fraction: float | str = "auto", patience: int = 30, kl_warmup_epochs: int = 30,
            modality_dropout: float = 0.25, num_particles: int = 1, weight_decay: float = 0.0,
            progress: bool = True, elbo: str = "fused", modality_dropout_mode: str = "both",
            calibrate: bool = True, early_stopping: str = "auto", checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
            resume: str | Path | None = None, max_retries: int = 3, compile: str | bool = "auto") -> FusionModel:
        """Fit by stochastic variational inference (Pyro ``Trace_ELBO``, Adam, minibatches).

        Parameters
        ----------
        max_epochs, batch_size, lr, weight_decay : optimisation settings.
        seed : int
            Seeds initialisation, minibatch order, the validation split and every draw;
            two CPU runs with the same seed are bit-identical.
        validation_fraction : float or "auto"
            Share of training patients held out (stratified by the first categorical head)
            for early stopping and, with ``calibrate=True``, for the calibration map; 0 trains
            on all for ``max_epochs``. ``"auto"`` (default): 0.1, and for a model with a
            categorical head about ``MIN_CALIBRATION_PATIENTS`` (40) patients (the stratified
            split rounds per class) as long as that is at most 0.2 of them (``bayesfuse.model.fusion_model.auto_validation_fraction``;
            chosen on the cohort zoo, docs/model.md "Validation share").
        patience : int
            Epochs without validation improvement before stopping (best weights restored).
        kl_warmup_epochs : int
            The KL term's weight rises linearly from 0 to 1 over these epochs.
        modality_dropout : float
            Each present modality is hidden with this probability per step (at least one
            kept) from both the guide and the likelihood, so each step optimises the ELBO of a
            random subset (MVAE sub-sampled ELBO) and every subset learns to infer ``z``.
        modality_dropout_mode : {"both", "guide"}
            ``"both"`` (default): a dropped modality is hidden from the guide and the
            likelihood (as above). ``"guide"``: hidden from the guide only, so the step's ELBO
            reconstructs it from ``q(z | other modalities)`` (trains cross-modal prediction
            directly; measured in docs/imputation.md).
        num_particles : int
            ELBO particles per step.
        progress : bool
            Report progress: a live bar on a terminal; elsewhere (log files, CI, saved notebooks)
            one line at most every 30 s and a summary line.
        elbo : {"fused", "trace"}
            ``"fused"`` (default): the ELBO of the Pyro model/guide evaluated in one vectorised
            torch pass (same estimator as ``Trace_ELBO``, faster: docs/benchmarks.md); ``"trace"``: Pyro's
            ``Trace_ELBO`` itself.
        early_stopping : {"auto", "heads", "elbo"}
            Validation criterion for early stopping (and the ``val_loss`` column of ``history_``):
            ``"heads"`` = the heads' posterior-predictive negative log-likelihood on the validation
            patients (:func:`bayesfuse.train.svi.validation_head_nll`); ``"elbo"`` = their negative
            ELBO (reconstruction + heads + KL). ``"auto"`` (default, :func:`auto_early_stopping`):
            ``"heads"`` when the model has a categorical head, or a survival head and at least twice as
            many features as training patients; else ``"elbo"`` (survival models on a few clinical
            variables lost D-calibration with ``"heads"``). Chosen on the cohort zoo (docs/model.md,
            "Defaults chosen on the cohort zoo" and "Early stopping of survival-only models"): the ELBO is
            dominated by reconstructing thousands of features, so it stops when the decoders start to
            over-fit uninformative features, before the heads have learnt.
        calibrate : bool
            After SVI, fit the post-hoc calibration map of every categorical head (a temperature
            per missingness pattern, :class:`bayesfuse.posterior.class_calibration.ClassCalibration`)
            on the early-stopping validation patients, which the SVI fit never trains on, and
            apply it in :meth:`predict` to every draw (``class_calibration_``; saved with the
            model), after fitting each modality's reliability on the same patients
            (``modality_reliability_``, see :meth:`calibrate`). Needs ``validation_fraction > 0``.
            ``False``: raw head probabilities and every reliability 1.
        checkpoint_dir, checkpoint_every : str or Path, int
            Write an atomic checkpoint (parameters, optimizer state, RNG states, loop state; safetensors
            + JSON, no pickle) to ``checkpoint_dir/epoch-NNNNNN/`` after every ``checkpoint_every``-th
            epoch (the two most recent are kept; 0 = none).
        resume : str or Path, optional
            Continue an interrupted fit from a checkpoint folder (or the ``checkpoint_dir`` holding
            them: its latest). Build the model and call ``fit`` with the same arguments as the
            interrupted run; on the CPU the final parameters are then bit-identical to an
            uninterrupted run. A checkpoint of other settings is a ``ModelFormatError``.
        max_retries : int
            A step with a non-finite loss or gradient is never applied; an epoch that had one is
            rerun from its start with the learning rate times 0.3, at most ``max_retries`` times over
            the fit, then :class:`~bayesfuse.exceptions.ConvergenceError` names the modality / head
            whose term was non-finite. Retries are listed in ``fit_faults_``.
        compile : {"auto", True, False}
            ``torch.compile`` the training step's loss and backward (same random draws, equal results up to
            float rounding). ``"auto"`` (default): compile only when the fit is long enough to amortise the
            compile time (measured on the first two epochs) and keep it only if it measurably wins;
            ``True``: always (falls back to eager, with a warning, when compiling fails); ``False``: never.
            The decision and the measured times are in ``fit_compile_`` (docs/benchmarks.md, section 1).

        Returns
        -------
        self

        Notes
        -----
        ``KeyboardInterrupt`` during training stops it, keeps the best parameters so far (the
        post-fit refits still run), warns, and sets ``interrupted_ = True`` (and ``stopped_early_``):
        the model is usable; with checkpoints, ``fit(resume=checkpoint_dir)`` continues it.
        """
        data = self._train_data
        if data is None:
            raise DataError("This model was loaded from disk and keeps no training data, so fit() has nothing to "
                            "train on. Build a new bf.FusionModel(train_data, heads=...) and fit that.")
        if isinstance(validation_fraction, str) and validation_fraction == "auto":
            pass
        elif isinstance(validation_fraction, numbers.Real) and not isinstance(validation_fraction, (bool, np.bool_)) \
                and 0 <= validation_fraction < 1:
            validation_fraction = float(validation_fraction)
        else:
            raise ArgumentError(f"validation_fraction={validation_fraction!r} must be 'auto' or a number in [0, 1), "
                                "e.g. 0.1.")
        if modality_dropout_mode not in ("both", "guide"):
            raise ArgumentError(f"modality_dropout_mode={modality_dropout_mode!r} is not supported; use 'both' "
                             "(hide a dropped modality from the guide and the likelihood) or 'guide' (guide only).")
        if compile not in (True, False, *COMPILE_MODES):
            raise ArgumentError(f"compile={compile!r} is not supported; use 'auto', True or False.")
        if early_stopping not in ("auto", *MONITORS):
            raise ArgumentError(f"early_stopping={early_stopping!r}; use 'auto', 'heads' (validation NLL of the "
                                "heads) or 'elbo' (validation ELBO).")
        has_cat = any(isinstance(spec, Categorical) for spec in self.heads.values())
        if early_stopping == "heads" and not self.heads:
            raise ArgumentError("early_stopping='heads' needs a model with heads; this one has none. Use 'elbo'.")
        gen = seed_everything(seed)
        pres = data.presence.to_numpy()
        has_any = pres.any(axis=1)
        monitor = early_stopping
        if early_stopping == "auto":
            monitor = auto_early_stopping(sum(tf.n_features for tf in self.transforms.values()), int(has_any.sum()),
                                          has_cat, any(isinstance(spec, Survival) for spec in self.heads.values()))
        ids = data.sample_ids
        if not has_any.all():
            warnings.warn(f"{(~has_any).sum()} training patient(s) have no modality and are left out of "
                          "training (they carry no information on z).", NoModalityWarning, stacklevel=2)
        if validation_fraction == "auto":
            validation_fraction = auto_validation_fraction(int(has_any.sum()), has_cat)
        train_ids, val_ids = self._validation_split(ids[has_any], data, validation_fraction, seed)
        train_store = self._store(data, strict_targets=True, ids=train_ids)
        val_store = self._store(data, strict_targets=True, ids=val_ids) if len(val_ids) else None
        self.module = self._build_module()
        self.imputation_calibration_ = {}   # a refit invalidates a recalibration (also if it fails half-way)
        self.class_calibration_ = {}
        config = TrainConfig(max_epochs=max_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             kl_warmup_epochs=kl_warmup_epochs, patience=patience, num_particles=num_particles,
                             modality_dropout=modality_dropout, progress=progress, elbo=elbo,
                             modality_dropout_mode=modality_dropout_mode, monitor=monitor,
                             min_epochs=min(max_epochs, kl_warmup_epochs + 10), compile=compile)
        result = train_svi(self.module, train_store, val_store, config, gen,
                           *fit_reliability_options(config, seed, validation_fraction, train_ids, val_ids,
                                                    checkpoint_dir, checkpoint_every, resume, max_retries))
        self.interrupted_, self.fit_faults_ = result.extra["interrupted"], result.extra["faults"]
        self.fit_compile_ = result.extra["compile"]
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.fit_seconds_ = result.seconds
        self.train_config_ = {**config.__dict__, "seed": seed, "validation_fraction": validation_fraction,
                              "n_train": len(train_ids), "n_validation": len(val_ids),
                              "validation_ids": [str(i) for i in val_ids]}
        self._finish_bayesian(train_store, seed)
        del train_store, val_store, result   # free the training tensors before calibration builds its own
        if calibrate and len(val_ids):
            self.calibrate(data.subset(ids=val_ids), seed=seed)
        return self

    def calibrate(self, data: MultiModalData | None = None, num_samples: int = 100, seed: int = 0) -> dict:
        """Fit the post-hoc calibration map of the categorical heads on held-out patients.

        :meth:`fit` calls it on its early-stopping validation patients (``calibrate=True``, the
        default); call it yourself to calibrate on another labelled set the model was not trained
        on (e.g. after :func:`bayesfuse.model.distributed.fit_distributed`, which keeps no
        validation patients). Keep those patients apart from an :class:`bayesfuse.Abstainer`'s or
        :class:`bayesfuse.ConformalSets`' calibration patients: their guarantees need patients
        that fitted nothing.

        First each modality's reliability (a multiplier of its expert's precision in the product
        of experts, ``modality_reliability_``) is fitted on these patients
        (:func:`bayesfuse.model.modality_reliability.fit_modality_reliability`): an expert that is
        over-confident on patients it was not trained on is discounted. Then each patient is
        predicted under every subset of its modalities (up to 5 modalities; see
        :func:`bayesfuse.model.head_calibration.calibration_patterns`) and one temperature per
        missingness pattern is fitted, shrunk towards a pooled temperature (empirical Bayes,
        docs/model.md "Post-hoc calibration").

        Parameters
        ----------
        data : MultiModalData, optional
            Labelled held-out patients (default: the fit's early-stopping validation patients).
        num_samples, seed : int
            Posterior draws per patient and their seed.

        Returns
        -------
        dict[str, ClassCalibration]
            Also stored in ``class_calibration_`` (replacing any earlier map).
        """
        from bayesfuse.model.head_calibration import fit_class_calibration  # noqa: PLC0415
        from bayesfuse.model.modality_reliability import fit_modality_reliability  # noqa: PLC0415

        self._check_fitted()
        if data is None:
            cfg = self.train_config_ or {}
            ids = cfg.get("validation_ids")
            if not ids or self._train_data is None:
                raise DataError("No held-out patients to calibrate on: this model kept no early-stopping patients "
                                "(validation_fraction=0, a distributed fit, or a loaded model). Pass data= with "
                                "labelled patients the model was not trained on.")
            data = self._train_data.subset(ids=ids)
        if not isinstance(data, MultiModalData):
            raise TypeError("data must be a bf.MultiModalData of labelled held-out patients.")
        self.class_calibration_ = {}
        fit_modality_reliability(self, data, num_samples=num_samples, seed=seed)
        self.class_calibration_ = fit_class_calibration(self, data, num_samples=num_samples, seed=seed)
        return self.class_calibration_

    def _finish_bayesian(self, train_store: TensorStore, seed: int) -> None:
        """After training: refit the head-weight posterior (Bayesian modes) and set ``diagnostics_``.

        Shared by :meth:`fit` and :func:`bayesfuse.model.distributed.fit_distributed`, so a model
        trained either way gets the same post-fit step (and a refit never keeps stale diagnostics).
        """
        self.diagnostics_ = None
        refit = getattr(self, "survival_refit", "none")
        if refit != "none":   # the survival head is Bayesian in every mode
            from bayesfuse.module.survival_refit import refit_module_survival_heads  # noqa: PLC0415

            with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                refit_module_survival_heads(self.module, train_store, **_SURVIVAL_REFIT_ARGS[refit])
        if self.bayesian not in ("heads", "encoders+heads", "all"):
            return
        from bayesfuse.diagnostics.vi import head_weight_diagnostics  # noqa: PLC0415

        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            if self.head_refit_steps:
                from bayesfuse.module.head_refit import refit_module_heads  # noqa: PLC0415

                refit_module_heads(self.module, train_store, self.head_refit_steps)
            self.diagnostics_ = head_weight_diagnostics(self.module, train_store)

    def _validation_split(self, ids: np.ndarray, data: MultiModalData, fraction: float, seed: int):
        n_val = int(round(fraction * len(ids)))
        if fraction == 0 or n_val < 1 or len(ids) - n_val < 2:
            return ids, ids[:0]
        rs = np.random.RandomState(seed)
        strat = None
        cat = [s for s in self.heads.values() if isinstance(s, Categorical)]
        if cat:
            strat = data.targets.loc[ids, cat[0].column].astype(str).to_numpy()
        val = np.zeros(len(ids), dtype=bool)
        if strat is not None:
            for lab in sorted(set(strat)):
                members = np.flatnonzero(strat == lab)
                k = int(round(fraction * len(members)))
                val[rs.permutation(members)[:k]] = True
        else:
            val[rs.permutation(len(ids))[:n_val]] = True
        return ids[~val], ids[val]

    # ---------------------------------------------------------------- predict
    def _check_fitted(self) -> FusionModule:
        if self.module is None:
            raise NotFittedError("This FusionModel is not fitted yet; call model.fit() (or FusionModel.load).")
        return self.module

    @torch.no_grad()
    def predict(self, data: MultiModalData, num_samples: int = 200, seed: int = 0,
                batch_size: int = 4096, return_latent: bool = True, calibrated: bool | None = None,
                shared_noise: bool = False) -> Posterior:
        """Posterior-predictive draws for every patient of ``data``.

        Each draw samples ``z`` from the fused posterior of the modalities the patient has
        (and head parameters, for Bayesian heads), then evaluates every head.

        Parameters
        ----------
        data : MultiModalData
            Patients to score; any subset of the model's modalities (columns matched by name).
        num_samples : int
            Number of posterior draws ``S``.
        seed : int
            Seeds the draws (the caller's global RNG state is left untouched).
        batch_size : int
            Patients per chunk, rounded up to a multiple of 256 (bounds memory to about
            ``num_samples x batch_size x (latent_dim + n_classes)`` floats per chunk; the
            result does not depend on it).
        return_latent : bool
            Keep the ``(num_samples, n_patients, latent_dim)`` draws of ``z`` in
            ``Posterior.latent``. ``False`` stores an empty ``(num_samples, n_patients, 0)``
            array instead (head draws are unchanged), for large cohorts x many draws.
        calibrated : bool, optional
            Apply the categorical heads' calibration map (``class_calibration_``, fitted by
            :meth:`fit` / :meth:`calibrate`) to every draw: ``p_s -> softmax(log p_s / T)`` with
            the patient's missingness-pattern temperature, so probabilities, uncertainty,
            abstention and conformal sets all see the same calibrated draws. Default: whenever
            a map is fitted (``Posterior.extra["class_calibration"]`` records each applied map).
            ``False``: the head draws before the temperature. The modalities' reliabilities
            (``modality_reliability_``) are part of the fitted posterior and apply either way.
        shared_noise : bool
            ``False`` (default): every patient gets its own noise for ``z`` (drawn in fixed blocks
            of patients, so a patient's draws depend on its row position). ``True``: one noise
            vector per draw, shared by every patient (common random numbers), so each patient's
            draws depend only on its own data and ``seed``: a subset or a permutation of the rows
            gives the same numbers row for row (used by :mod:`bayesfuse.sklearn`). Each patient's
            draws have the same distribution either way; only their Monte-Carlo errors become
            correlated across patients.

        Returns
        -------
        Posterior
            Rows in ``data.sample_ids`` order. Patients with no modality are scored from the
            prior and flagged (``Posterior.no_modality``, plus a :class:`NoModalityWarning`).
        """
        module = self._check_fitted()
        module.eval()
        if not isinstance(data, MultiModalData):
            raise InputTypeError("data must be a bf.MultiModalData.")
        if int(num_samples) < 1:
            raise ArgumentError(f"num_samples={num_samples} must be >= 1.")
        _check_not_empty(data)
        store = self._store(data, strict_targets=False)
        presence = data.presence.reindex(columns=self.modalities, fill_value=False)
        n_none = int((~presence.any(axis=1)).sum())
        if n_none:
            warnings.warn(f"{n_none} patient(s) have no modality; they are scored from the prior predictive and "
                          "flagged in Posterior.no_modality.", NoModalityWarning, stacklevel=2)
        S, N = int(num_samples), store.n
        maps = {} if calibrated is False else dict(getattr(self, "class_calibration_", None) or {})
        temps = {h: torch.as_tensor(c.patient_temperatures(presence.to_numpy()), dtype=self.dtype, device=self.device)
                 for h, c in maps.items() if h in module.heads}
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with seeded_rng(seed, devices):   # locked: concurrent predicts give the serial draws
            head_params = {h: head.draw_params(S) for h, head in module.heads.items()}
            draw_mode = hasattr(module, "prediction_draws")
            ctx = module.prediction_draws(S) if draw_mode else contextlib.nullcontext()
            locs, scales, precs, zs = [], [], [], []
            stack = contextlib.ExitStack()
            stack.enter_context(ctx)  # weights / dropout masks drawn once here, shared by every chunk
            outs: dict[str, dict[str, list[torch.Tensor]]] = {h: {} for h in module.heads}
            # Noise is drawn in fixed blocks of _NOISE_BLOCK patients, in order, so the draws do
            # not depend on batch_size (rounded up to a whole number of blocks).
            block = self._NOISE_BLOCK
            step = max(1, -(-int(batch_size) // block)) * block
            shared: torch.Tensor | None = None
            try:
                for start in range(0, N, step):
                    idx = torch.arange(start, min(N, start + step), device=self.device)
                    batch = store.batch(idx)
                    loc, scale, prec = module.posterior_draws(batch) if draw_mode else module.posterior(batch)
                    d = loc.shape[-1]
                    if shared_noise:   # one (S, 1, d) draw, the same for every chunk and patient
                        if shared is None:
                            shared = torch.randn((S, 1, d), dtype=loc.dtype, device=loc.device)
                        eps = shared.expand(S, idx.numel(), d)
                    else:
                        eps = torch.cat([torch.randn((S, min(block, idx.numel() - b), d), dtype=loc.dtype,
                                                     device=loc.device) for b in range(0, idx.numel(), block)],
                                        dim=1)
                    z = loc + scale * eps
                    if draw_mode:  # per-draw encoder weights: keep the moments of the mixture over draws
                        from bayesfuse.module.bayesian_module import summarise_draws  # noqa: PLC0415

                        loc, scale, prec = summarise_draws(loc, scale, prec)
                    for h, head in module.heads.items():
                        pred = head.predict(z, head_params[h], **module.head_inputs(h, batch, z))
                        if h in temps:
                            pred["probs"] = temper_probs(pred["probs"], temps[h][idx])
                        for k, v in pred.items():
                            outs[h].setdefault(k, []).append(v.cpu())  # in the model's dtype
                    locs.append(loc.cpu())
                    scales.append(scale.cpu())
                    precs.append(prec.cpu())
                    zs.append(z.cpu() if return_latent else z.new_empty((S, z.shape[-2], 0)).cpu())
            finally:
                stack.close()
        draws = {h: {k: torch.cat(v, dim=1).numpy() for k, v in d.items()} for h, d in outs.items()}
        return Posterior(
            sample_ids=data.sample_ids, heads=dict(self.heads), draws=draws,
            latent=torch.cat(zs, dim=1).numpy(), latent_loc=torch.cat(locs).double().numpy(),
            latent_scale=torch.cat(scales).double().numpy(), presence=presence.astype(bool),
            modality_precision=torch.cat(precs, dim=1).permute(1, 0, 2).double().numpy(), seed=int(seed),
            extra={"class_calibration": {h: maps[h].to_config() for h in temps}} if temps else {})

    @property
    def modality_reliability_(self) -> pd.Series:
        """Each modality's expert-precision multiplier in the product of experts (1 = as trained).

        Fitted by :meth:`calibrate` (so by default at the end of :meth:`fit`) on the held-out patients, by
        :func:`bayesfuse.model.modality_reliability.fit_modality_reliability`; values below 1 mark a
        modality whose expert was over-confident on patients it was not trained on.
        """
        module = self._check_fitted()
        return pd.Series(module.reliability.detach().cpu().double().numpy(), index=self.modalities,
                         name="reliability")

    def latent(self, data: MultiModalData, num_samples: int = 200, seed: int = 0):
        """Fused posterior of ``z`` per patient, mean and sd (:class:`bayesfuse.posterior.Latent`;
        ``.to_anndata()`` puts them in ``obsm`` for scanpy). The same numbers as
        ``predict(data).latent_loc`` / ``latent_scale`` (draws matter only for weight-draw modes)."""
        return self.predict(data, num_samples=num_samples, seed=seed, return_latent=False).latent_summary()

    def impute(self, data: MultiModalData, modalities: list[str] | str | None = None, num_samples: int = 200,
               seed: int = 0, reconstruct: bool = False, batch_size: int = 1024,
               calibrated: bool | None = None) -> Imputation:
        """Draws of modalities given what each patient has (variational imputation).

        ``z ~ q(z | x_present)`` (fused posterior of the patient's modalities), then
        ``x_m ~ p(x_m | z)`` with the decoder's noise (Gaussian noise, Bernoulli draws, Poisson /
        NB counts with the patient's library, or the training median library for a patient
        without the modality), mapped back to original units.

        Parameters
        ----------
        data : MultiModalData
            Patients to impute for; any subset of the model's modalities.
        modalities : list of str, optional
            Modalities to draw (default: all of the model's).
        num_samples : int
            Draws ``S`` per patient.
        seed : int
            Seeds the draws (the global RNG state is left untouched).
        reconstruct : bool
            False (default): observed cells are passed through and only absent modalities and
            NaN cells are drawn. True: every cell is drawn from the model (reconstruction).
        batch_size : int
            Patients per chunk (bounds memory; it changes which random numbers each draw uses,
            not their distribution).
        calibrated : bool, optional
            Apply the recalibration fitted by :meth:`calibrate_imputation` to the Gaussian
            modalities it covers, for patients who lack the modality (default: whenever one is
            fitted; ``Imputation.extra["recalibrated"]`` lists them). False gives the raw
            posterior predictive.

        Returns
        -------
        Imputation
            Draws ``(S, n_patients, n_features)`` per modality (rows in ``data.sample_ids``
            order, the model's features). Patients with no modality get prior-predictive draws
            and are flagged (``Imputation.no_modality`` plus a :class:`NoModalityWarning`).
        """
        from bayesfuse.model.impute import impute  # noqa: PLC0415

        _check_not_empty(data)
        return impute(self, data, modalities=modalities, num_samples=num_samples, seed=seed,
                      reconstruct=reconstruct, batch_size=batch_size, calibrated=calibrated)

    def calibrate_imputation(self, data: MultiModalData | None = None, modalities: list[str] | str | None = None,
                             mode: str = "global", level: float = 0.9, num_samples: int = 200, seed: int = 0,
                             min_patients: int = 10) -> dict:
        """Recalibrate the imputation of Gaussian modalities on held-out patients (post hoc).

        For each modality, the calibration patients that have it get it hidden and imputed from
        their other modalities; in decoder (train-standardised) space the predictive mean is
        shrunk towards the training mean, ``mu' = b_f mu``, and every draw moves with it and is
        rescaled, ``x' = mu' + s (x - mu)``, with ``s`` set so that the ``level`` interval covers
        ``level`` of the calibration values (docs/imputation.md, "Recalibration"). The result is
        stored in ``imputation_calibration_``, applied by :meth:`impute` and saved with the model.

        Parameters
        ----------
        data : MultiModalData, optional
            Calibration patients NOT used for training. Default: the model's own early-stopping
            validation patients (``fit(validation_fraction > 0)``, training data attached).
        modalities : list of str, optional
            Gaussian modalities to recalibrate (default: every Gaussian modality that some
            calibration patient has).
        mode : {"global", "feature", "auto", "none"}
            Slope ``b``: one per modality (``"global"``, default: best or tied on held-out
            tcga_gbmlgg patients, docs/imputation.md), per feature shrunk towards it by empirical
            Bayes (``"feature"``), chosen by 5-fold cross-validation over the calibration patients
            (``"auto"``), or 1 (``"none"``: spread only).
        level : float
            Interval level the spread scale is fitted for.
        num_samples, seed : draws per patient and their seed. Impute with a similar number of draws:
            empirical intervals of few draws are narrower (measured: a spread fitted on 200 draws
            gives 90% intervals covering 0.80 with 10 draws, 0.84 with 20, 0.90 with 200).
        min_patients : int
            Fewer calibration patients (with the modality and another one) raise ``ValueError``.

        Returns
        -------
        dict[str, ImputationRecalibration]
            The records fitted by this call (``slope`` (F,), ``spread``, ``mode``, ``cv_mse``,
            ``diagnostics``).
        """
        from bayesfuse.model.calibrate_imputation import calibrate_imputation  # noqa: PLC0415

        return calibrate_imputation(self, data, modalities=modalities, mode=mode, level=level,
                                    num_samples=num_samples, seed=seed, min_patients=min_patients)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json`` (with a format version) and ``weights.safetensors`` to ``path``."""
        from bayesfuse.model.persistence import save_model  # noqa: PLC0415

        self._check_fitted()
        return save_model(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> FusionModel:
        """Load a model saved by :meth:`save` (no code is executed: JSON + safetensors)."""
        from bayesfuse.model.persistence import load_model  # noqa: PLC0415

        return load_model(cls, Path(path), device=device)

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}[{tf.likelihood}, {tf.n_features}]" for m, tf in self.transforms.items())
        heads = ", ".join(f"{k}:{v.kind}" for k, v in self.heads.items()) or "none"
        state = "fitted" if self.module is not None else "not fitted"
        return (f"FusionModel({state}; latent_dim={self.latent_dim}; modalities: {mods}; heads: {heads}; "
                f"device={self.device}, dtype={dtype_name(self.dtype)})")
