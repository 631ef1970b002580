"""Fit the post-hoc calibration map of a model's categorical heads on held-out patients.

The map itself (a temperature per missingness pattern, numpy) is
:class:`bayesfuse.posterior.class_calibration.ClassCalibration`; this module produces its data:
the held-out patients are predicted with every subset of the modalities they have hidden
(:func:`calibration_patterns`), so that a pattern absent from the training data (e.g. test
patients without protein when every training patient has it) still gets its own temperature.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from bayesfuse._labels import label_codes
from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.exceptions import NoModalityWarning
from bayesfuse.heads import Categorical
from bayesfuse.posterior.class_calibration import ClassCalibration, pattern_key

__all__ = ["calibration_patterns", "calibration_groups", "fit_class_calibration", "merge_groups", "MAX_SUBSETS"]

#: up to this many modalities every non-empty subset is a calibration pattern (2^5 - 1 = 31)
MAX_SUBSETS = 5


def calibration_patterns(modalities: list[str]) -> list[tuple[str, ...]]:
    """Modality subsets the held-out patients are predicted under.

    Every non-empty subset for up to :data:`MAX_SUBSETS` modalities; beyond that all modalities,
    each one left out, and each one alone (``2M + 1`` subsets).
    """
    mods = list(modalities)
    if len(mods) <= MAX_SUBSETS:
        return [c for r in range(len(mods), 0, -1) for c in itertools.combinations(mods, r)]
    keep = [tuple(mods)] + [tuple(m for m in mods if m != x) for x in mods] + [(m,) for m in mods]
    return list(dict.fromkeys(keep))


def fit_class_calibration(model, data: MultiModalData, num_samples: int = 100, seed: int = 0,
                          **prior) -> dict[str, ClassCalibration]:
    """Calibration maps of every categorical head of ``model``, fitted on ``data``.

    Parameters
    ----------
    model : FusionModel
        A fitted model (its categorical heads are predicted uncalibrated).
    data : MultiModalData
        Held-out patients with labels, never used by the SVI fit (default in ``fit``: the
        early-stopping validation patients).
    num_samples, seed : int
        Posterior draws per patient and their seed.
    **prior
        ``prior_sd`` / ``pattern_sd`` of :meth:`ClassCalibration.fit`.

    Returns
    -------
    dict[str, ClassCalibration]
        One map per categorical head with at least one labelled held-out patient.
    """
    groups = calibration_groups(model, data, num_samples, seed)
    return {h: ClassCalibration.fit(h, model.modalities, merge_groups(g), **prior) for h, g in groups.items() if g}


def calibration_groups(model, data: MultiModalData, num_samples: int = 100, seed: int = 0) -> dict[str, list]:
    """Per categorical head: ``(pattern key, log-prob draws (S, n, C), label codes (n,), ids (n,))`` groups
    of ``data`` predicted by ``model`` (uncalibrated) under every calibration pattern."""
    heads = [h for h, spec in model.heads.items() if isinstance(spec, Categorical)]
    if not heads or data.n_samples == 0:
        return {}
    mods = model.modalities
    presence = data.presence.reindex(columns=mods, fill_value=False)
    groups: dict[str, list] = {h: [] for h in heads}
    seen: set = set()
    for subset in calibration_patterns(mods):
        eff = presence[list(subset)]
        ids = eff.index[eff.any(axis=1).to_numpy()]
        if len(ids) == 0:
            continue
        part = data.subset(ids=ids).select_modalities([m for m in subset if m in data.modality_names])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoModalityWarning)
            post = model.predict(part, num_samples=num_samples, seed=seed, return_latent=False, calibrated=False)
        keys = np.array([pattern_key([m for m in mods if m in subset and presence.at[i, m]]) for i in ids],
                        dtype=object)
        # a patient lacking a modality gets the same pattern from several subsets: keep its first row
        fresh = np.array([(i, k) not in seen for i, k in zip(ids, keys)], dtype=bool)
        seen.update(zip(ids, keys))
        for h in heads:
            codes = label_codes(part.targets[model.heads[h].column].to_numpy(dtype=object), post.classes(h)) \
                if model.heads[h].column in part.targets.columns else np.full(len(ids), -1)
            logp = np.log(np.clip(np.asarray(post.probs(h), dtype=float), 1e-300, None))
            for key in dict.fromkeys(keys):
                sel = (keys == key) & (codes >= 0) & fresh
                if sel.any():
                    groups[h].append((key, logp[:, sel], codes[sel], np.asarray(ids)[sel]))
    return groups


def merge_groups(groups: list) -> list:
    """Concatenate the rows of groups with the same pattern key (several subsets can give one pattern)."""
    out: dict[str, list] = {}
    for key, lp, c, i in groups:
        out.setdefault(key, []).append((lp, c, i))
    merged = []
    for key, parts in out.items():
        draws = min(p[0].shape[0] for p in parts)
        merged.append((key, np.concatenate([p[0][:draws] for p in parts], axis=1),
                       np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])))
    return merged
