"""Cross-fitted ensemble of Bayesian-heads fusion models (issue 6, docs/studies/bayesian.md): tried, not adopted.

Study code, not part of the package: on two 4-fold CV partitions of the training splits it
lost to the deep ensemble and to ``DeepEnsemble.bayesian`` on both data sets (docs/studies/bayesian.md,
"Cross-fitted Bayesian heads"). Kept here so ``studies/bayesian_heads/bayesian.py cv_xfit`` reproduces and
``tests/test_ensemble_crossfit.py`` checks it.

The head-weight posterior of a single ``bayesian="heads"`` fit is refitted on the *training*
patients' latents, which the label-trained encoders (head weight up to 100) have already pulled
apart: the labels are used twice and the head posterior comes out over-confident (its mean is
2-3x longer than a deterministic head's, docs/studies/bayesian.md "Why the single Bayesian heads
over-penalise the rare errors"). Cross-fitting removes the double use: the training patients are
split into ``K`` folds stratified by the categorical head's labels; member ``k`` is fitted on the
patients outside fold ``k`` and its head-weight posterior is then refitted
(:func:`bayesfuse.module.head_refit.refit_head_posterior`, same prior and guide as the package)
on the latents of fold ``k`` only, which that member's encoders never saw. Predictions are the
uniform mixture of the ``K`` members (:meth:`bayesfuse.DeepEnsemble.predict`). Latent spaces of different
members are not aligned, so each member's head only ever sees its own encoders' latents.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Categorical, make_head
from bayesfuse.model.advanced import AdvancedConfig
from bayesfuse.model.ensemble import DeepEnsemble
from bayesfuse.model.fusion_model import FusionModel

__all__ = ["CrossFittedEnsemble", "crossfit_folds"]

_WEIGHT_MODES = ("heads", "encoders+heads", "all")


def crossfit_folds(labels: pd.Series, K: int, seed: int = 0) -> pd.Series:
    """Stratified assignment of patients to ``K`` folds.

    Within each class the patients are shuffled and dealt round-robin; the dealing starts where
    the previous class stopped, so fold sizes differ by at most one overall and each class's
    counts differ by at most one between folds. Unknown labels (NaN) form their own stratum.

    Parameters
    ----------
    labels : pandas.Series, shape (n,)
        Class label per patient, indexed by sample id.
    K : int
        Number of folds (>= 2).
    seed : int
        Seed of the shuffling.

    Returns
    -------
    pandas.Series of int, shape (n,), indexed like ``labels``, named ``"fold"``
        Fold index in ``0..K-1`` per patient.

    Raises
    ------
    ValueError
        ``K`` < 2.
    DataError
        A known class has fewer than ``K`` patients (some fold would have none of it, and the
        member refitted on that fold could not learn it), or there are fewer than ``K`` labelled patients.
    """
    if int(K) != K or int(K) < 2:
        raise ValueError(f"K={K}: cross-fitting needs an integer number of folds >= 2.")
    K = int(K)
    if not isinstance(labels, pd.Series):
        raise TypeError("labels must be a pandas Series indexed by sample id.")
    known = labels.dropna().astype(str)
    if len(known) < K:
        raise DataError(f"{len(known)} labelled patient(s) for K={K} folds; use a smaller K.")
    counts = known.value_counts()
    small = counts[counts < K]
    if len(small):
        raise DataError(f"Classes {dict(small)} have fewer than K={K} labelled patients, so some fold would hold "
                        "none of them; use K <= the smallest class size "
                        f"({int(counts.min())}) or merge/drop the rare classes.")
    strata = labels.astype(object).where(labels.notna(), None)
    strata = strata.map(lambda v: "\0missing" if v is None else str(v))
    rng = np.random.default_rng(seed)
    fold = pd.Series(-1, index=labels.index, name="fold", dtype=int)
    start = 0
    for key in sorted(pd.unique(strata.to_numpy())):
        pos = np.flatnonzero((strata == key).to_numpy())
        pos = pos[rng.permutation(len(pos))]
        fold.iloc[pos] = (start + np.arange(len(pos))) % K
        start = (start + len(pos)) % K
    return fold


class CrossFittedEnsemble(DeepEnsemble):
    """``K`` Bayesian-heads fusion models, each with its head posterior fitted on held-out latents.

    Member ``k`` (a :class:`FusionModel`) is trained on the patients outside fold ``k``
    (:func:`crossfit_folds`, stratified by the first categorical head's labels) with fit seed
    ``seed + k``; after its SVI fit, the Gaussian posterior of every Bayesian categorical head is
    refitted (:func:`bayesfuse.module.head_refit.refit_head_posterior`, ``head_refit_steps``
    Adam steps, prior ``N(0, prior_scale^2)`` as in the package) on the latent guide
    ``q(z | x)`` of fold ``k``'s labelled patients, encoded by member ``k``'s own encoders.
    Predictions pool the members' draws (:meth:`DeepEnsemble.predict`). Same number of fits as
    a ``K``-member deep ensemble; each member sees ``(K-1)/K`` of the training patients.
    Survival heads are left as the members fitted them.

    Parameters
    ----------
    data : MultiModalData
        Training cohort.
    K : int
        Folds = members (>= 2; every class needs >= ``K`` labelled patients).
    fold_seed : int
        Seed of the fold assignment.
    refit_train_weight : float
        Weight ``w`` >= 0 of the member's own training patients' (in-sample) latents in the
        refit, next to the held-out fold's at weight 1: the refit target becomes
        ``p(theta) prod_{fold k} p(y|z,theta) prod_{train} p(y|z,theta)^w``. 0 (default) =
        held-out latents only.
    refit_prior_scale : float, optional
        Prior sd of the head weights in the held-out refit (default: the members' ``prior_scale``).
    **kwargs
        Passed to every member's :class:`FusionModel`; ``heads`` must contain a categorical head;
        ``bayesian`` (default ``"heads"``) must be a weight-uncertainty mode; ``head_refit_steps``
        (default 600, >= 1) sets the held-out refit's steps (the members' in-sample refit is off).

    Attributes
    ----------
    folds_ : pandas.Series of int (n,)
        Fold of every training patient.
    heldout_ids_ : list[numpy.ndarray]
        Sample ids of fold ``k`` (member ``k``'s training set is the complement).
    refit_ids_ : list[numpy.ndarray]
        After :meth:`fit`: the ids whose latents member ``k``'s head refit conditioned on at
        weight 1 (labelled fold-``k`` patients with at least one modality).
    refit_train_ids_ : list[numpy.ndarray]
        Ids conditioned on at weight ``refit_train_weight`` (empty when it is 0).
    members_ : list[FusionModel]
    fit_seconds_ : float
        SVI fits plus held-out refits, summed over members.
    """

    def __init__(self, data: MultiModalData, K: int = 5, fold_seed: int = 0, refit_train_weight: float = 0.0,
                 refit_prior_scale: float | None = None, **kwargs):
        if not isinstance(data, MultiModalData):
            raise TypeError("data must be a bf.MultiModalData.")
        if int(K) != K or int(K) < 2:
            raise ValueError(f"K={K}: a cross-fitted ensemble needs an integer K >= 2 (folds = members).")
        mode = kwargs.setdefault("bayesian", "heads")
        if mode not in _WEIGHT_MODES:
            raise ValueError(f"bayesian={mode!r}: cross-fitting refits a variational head posterior on held-out "
                             f"latents; use one of {_WEIGHT_MODES}.")
        cats = [make_head(key, spec) for key, spec in dict(kwargs.get("heads") or {}).items()]
        cats = [h for h in cats if isinstance(h, Categorical)]
        if not cats:
            raise ValueError("heads= has no categorical head; cross-fitting refits categorical head posteriors "
                             "(e.g. heads={'subtype': 'categorical'}).")
        column = cats[0].column
        if column not in data.targets.columns:
            raise DataError(f"Target column {column!r} of the categorical head is not in data.targets.")
        steps = int(kwargs.pop("head_refit_steps", 600))
        if steps < 1:
            raise ValueError(f"head_refit_steps={steps}: the held-out refit is the point of cross-fitting; "
                             "use >= 1 (default 600).")
        self.refit_steps = steps
        self._set_refit(refit_train_weight, refit_prior_scale)
        self.K = int(K)
        self._data = data
        self.folds_ = crossfit_folds(data.targets.loc[data.sample_ids, column], self.K, seed=fold_seed)
        f = self.folds_.to_numpy()
        ids = np.asarray(data.sample_ids, dtype=object)
        self.heldout_ids_ = [ids[f == k] for k in range(self.K)]
        self.members_ = [FusionModel(data.subset(ids=ids[f != k]), advanced=AdvancedConfig(head_refit_steps=0), **kwargs)
                         for k in range(self.K)]
        self.refit_ids_: list[np.ndarray] = []
        self.refit_train_ids_: list[np.ndarray] = []
        self._svi_state: list[dict] = []

    def _set_refit(self, train_weight, prior_scale) -> None:
        if not float(train_weight) >= 0:
            raise ValueError(f"refit_train_weight={train_weight} must be >= 0 (0 = held-out latents only).")
        if prior_scale is not None and not float(prior_scale) > 0:
            raise ValueError(f"refit_prior_scale={prior_scale} must be > 0 (or None for the members' prior).")
        self.refit_train_weight = float(train_weight)
        self.refit_prior_scale = None if prior_scale is None else float(prior_scale)

    def _bayes_heads(self, member: FusionModel) -> dict:
        from bayesfuse.module.bayesian_heads import BayesianCategoricalHeadModule  # noqa: PLC0415

        return {h: m for h, m in member.module.heads.items() if isinstance(m, BayesianCategoricalHeadModule)}

    def fit(self, seed: int = 0, **fit_kwargs) -> CrossFittedEnsemble:
        """Fit member ``k`` by SVI with seed ``seed + k`` (other arguments as :meth:`FusionModel.fit`),
        then refit its head posteriors on fold ``k`` (:meth:`refit_heads`)."""
        self._svi_state = []
        svi_seconds = 0.0
        for k, m in enumerate(self.members_):
            m.fit(seed=seed + k, **fit_kwargs)
            svi_seconds += m.fit_seconds_
            self._svi_state.append({h: ({n: v.detach().clone() for n, v in head.posterior_q.state_dict().items()},
                                        head.prior_scale) for h, head in self._bayes_heads(m).items()})
        self._fit_seed = int(seed)
        self._svi_seconds = svi_seconds
        return self.refit_heads()

    def refit_heads(self, train_weight: float | None = None, prior_scale: float | None = None,
                    seed: int | None = None, in_sample: bool = False) -> CrossFittedEnsemble:
        """(Re)fit every member's head posteriors on its held-out fold, starting from the guide
        the member's SVI fit ended with (so variants can be compared on the same fits).

        Parameters
        ----------
        train_weight, prior_scale : optional
            Override ``refit_train_weight`` / ``refit_prior_scale`` (stored on the ensemble).
        seed : int, optional
            Member ``k``'s refit noise is seeded with ``seed + k`` (default: the fit seed).
        in_sample : bool
            Control for benchmarks: refit on the member's own *training* latents instead of the
            held-out fold (what ``bayesian="heads"`` does), i.e. the same members without
            cross-fitting. Not stored; the next :meth:`refit_heads` call is held-out again.
        """
        if not self._svi_state:
            raise RuntimeError("Call fit() before refit_heads().")
        self._set_refit(self.refit_train_weight if train_weight is None else train_weight,
                        self.refit_prior_scale if prior_scale is None else prior_scale)
        from bayesfuse.diagnostics.vi import head_weight_diagnostics  # noqa: PLC0415
        from bayesfuse.module.head_refit import refit_head_posterior  # noqa: PLC0415

        seed = self._fit_seed if seed is None else int(seed)
        self.refit_ids_, self.refit_train_ids_ = [], []
        start = time.perf_counter()
        for k, m in enumerate(self.members_):
            heads = self._bayes_heads(m)
            for h, head in heads.items():
                state, ps = self._svi_state[k][h]
                head.posterior_q.load_state_dict(state)
                head.prior_scale = ps if self.refit_prior_scale is None else self.refit_prior_scale
            cols = [m.heads[h].column for h in heads]
            if in_sample:
                held = self._usable_ids(m._train_data, m._train_data.sample_ids, cols)
                stores = [(m._store(m._train_data, strict_targets=True, ids=held), 1.0)]
            else:
                held = self._usable_ids(self._data, self.heldout_ids_[k], cols)
                stores = [(m._store(self._data, strict_targets=True, ids=held), 1.0)]
            train = np.asarray([], dtype=object)
            if self.refit_train_weight > 0 and not in_sample:
                train = self._usable_ids(m._train_data, m._train_data.sample_ids, cols)
                stores.append((m._store(m._train_data, strict_targets=True, ids=train), self.refit_train_weight))
            module = m.module
            was_training = module.training
            module.eval()
            with torch.no_grad():
                parts = []
                for store, w in stores:
                    batch = store.full()
                    loc, scale, _ = module.posterior(batch)
                    parts.append((loc, scale, {h: batch.targets[h]["y"] for h in heads}, w))
            devices = [m.device.index or 0] if m.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(seed + k)
                for h, head in heads.items():
                    locs, scales, ys, ws = [], [], [], []
                    for loc, scale, y, w in parts:
                        known = y[h] >= 0
                        locs.append(loc[known])
                        scales.append(scale[known])
                        ys.append(y[h][known])
                        ws.append(torch.full((int(known.sum()),), float(w), dtype=loc.dtype, device=loc.device))
                    weight = torch.cat(ws) if len(parts) > 1 else None
                    refit_head_posterior(head, torch.cat(locs), torch.cat(scales), torch.cat(ys), self.refit_steps,
                                         patient_weight=weight)
                m.diagnostics_ = head_weight_diagnostics(module, stores[0][0])
            module.train(was_training)
            self.refit_ids_.append(held)
            self.refit_train_ids_.append(train)
        self.refit_seconds_ = time.perf_counter() - start
        self.fit_seconds_ = float(self._svi_seconds + self.refit_seconds_)
        return self

    @staticmethod
    def _usable_ids(data: MultiModalData, ids, columns: list[str]) -> np.ndarray:
        """``ids`` with at least one modality and a known label in one of ``columns``."""
        ids = np.asarray(ids, dtype=object)
        has_mod = data.presence.loc[ids].to_numpy().any(axis=1)
        labelled = data.targets.loc[ids, columns].notna().to_numpy().any(axis=1)
        return ids[has_mod & labelled]
