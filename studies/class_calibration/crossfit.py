"""Cross-fitted calibration map (studied 2026-12-02, not adopted): every training patient calibrated once.

Measured with the package at commit 0fe1905 (where ``fit(calibrate=True)`` cross-fitted below 200
validation patients): see ``studies/README.md`` and docs/studies/class_calibration.md. The function is
kept here so the demo comparison (``demo_crossfit.py``) still runs.
"""

from __future__ import annotations

import numpy as np

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.heads import Categorical
from bayesfuse.model.head_calibration import calibration_groups, merge_groups
from bayesfuse.posterior.class_calibration import ClassCalibration

__all__ = ["crossfit_class_calibration"]


def crossfit_class_calibration(model, data: MultiModalData, init_kwargs: dict, fit_kwargs: dict, folds: int = 5,
                               num_samples: int = 100, seed: int = 0, **prior) -> dict[str, ClassCalibration]:
    """Cross-fitted calibration maps: every training patient is a calibration patient once.

    The patients are split into ``folds`` folds (stratified by the first categorical head); for
    each fold a copy of ``model`` (same constructor options, preprocessing refitted) is trained on
    the other folds with ``fit_kwargs`` (its own early-stopping split inside them, no
    calibration) and predicts the held-out fold under every calibration pattern. The pooled
    held-out predictions of all folds fit one map, applied to ``model`` (trained on all patients):
    the fold models stand in for it, as in scikit-learn's ``CalibratedClassifierCV(ensemble=False)``.

    Parameters
    ----------
    model : FusionModel
        The fitted model (its constructor options are reused; it is not refitted).
    data : MultiModalData
        Its training patients (labelled).
    init_kwargs : dict
        Keyword arguments of :class:`FusionModel` for the fold models (``model``'s own options).
    fit_kwargs : dict
        Keyword arguments of :meth:`FusionModel.fit` for the fold models.
    folds : int
        ``K``; costs ``K`` extra fits.
    """
    heads = [h for h, spec in model.heads.items() if isinstance(spec, Categorical)]
    if not heads or data.n_samples < 2 * folds:
        return {}
    ids = np.asarray(data.sample_ids, dtype=object)
    strat = data.targets.loc[ids, model.heads[heads[0]].column].astype(str).to_numpy()
    rs = np.random.RandomState(seed)
    fold = np.empty(len(ids), dtype=int)
    for lab in sorted(set(strat)):
        members = rs.permutation(np.flatnonzero(strat == lab))
        fold[members] = (np.arange(len(members)) + rs.randint(folds)) % folds
    groups: dict[str, list] = {h: [] for h in heads}
    for k in range(folds):
        member = type(model)(data.subset(ids=ids[fold != k]), **init_kwargs)
        member.fit(**{**fit_kwargs, "seed": seed + 1 + k, "calibrate": False, "progress": False})
        for h, g in calibration_groups(member, data.subset(ids=ids[fold == k]), num_samples, seed).items():
            groups[h].extend(g)
    return {h: ClassCalibration.fit(h, model.modalities, merge_groups(g), **prior) for h, g in groups.items() if g}
