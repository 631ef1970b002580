"""Tidy exports of a :class:`~bayesfuse.posterior.Posterior`: one wide DataFrame, or a MuData.

numpy / pandas only; ``anndata`` / ``mudata`` are imported lazily by the MuData export.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesfuse.heads import Categorical, Survival

__all__ = ["posterior_frame", "posterior_mudata"]


def _anndata():
    try:
        import anndata
    except ImportError as exc:   # pragma: no cover - only without the extra
        raise ImportError("anndata is needed for AnnData/MuData export; pip install 'bayesfuse[scverse]'.") from exc
    return anndata


def _times(post, head: str, times):
    return post.default_times(head) if times is None else np.atleast_1d(np.asarray(times, dtype=np.float64))


def posterior_frame(post, prob: float = 0.9, times=None, tau: float | None = None) -> pd.DataFrame:
    """Every per-patient summary of ``post`` as one frame (see :meth:`Posterior.to_frame`)."""
    parts: dict[tuple[str, str], pd.DataFrame] = {}
    for h, spec in post.heads.items():
        if isinstance(spec, Categorical):
            lo, hi = post.credible_interval(h, prob)
            parts[(h, "mean")] = post.mean_probs(h)
            parts[(h, "lower")], parts[(h, "upper")] = lo, hi
            parts[(h, "prediction")] = post.predict(h).to_frame("")
            unc = post.uncertainty(h)
            parts[(h, "entropy")] = unc
        elif isinstance(spec, Survival) and h in post.draws:
            t = _times(post, h, times)
            lo, hi = post.survival_interval(h, t, prob)
            parts[(h, "survival_mean")] = post.survival_mean(h, t)
            parts[(h, "survival_lower")], parts[(h, "survival_upper")] = lo, hi
            parts[(h, "risk_mean")] = post.risk_mean(h, t)
            parts[(h, "median_survival")] = post.median_survival_summary(h, prob).rename(columns=str)
            if tau is not None:
                parts[(h, "rmst")] = post.restricted_mean_survival_summary(h, tau, prob)
    parts[("", "modality_weight")] = post.modality_weights()
    frames = []
    for (h, stat), df in parts.items():
        df = df.copy()
        df.columns = pd.MultiIndex.from_tuples([(h, stat, c) for c in df.columns], names=["head", "stat", "label"])
        frames.append(df)
    idx = pd.Index(post.sample_ids, name="sample_id")
    n_mod = pd.DataFrame({("", "n_modalities", ""): post.n_modalities.to_numpy()}, index=idx)
    n_mod.columns = pd.MultiIndex.from_tuples(n_mod.columns, names=["head", "stat", "label"])
    out = pd.concat([*frames, n_mod], axis=1)
    out.index = idx
    return out


def posterior_mudata(post, prob: float = 0.9, times=None):
    """``post`` as a MuData: one AnnData per head (see :meth:`Posterior.to_mudata`)."""
    ad = _anndata()
    try:
        import mudata
    except ImportError as exc:   # pragma: no cover
        raise ImportError("mudata is needed for MuData export; pip install 'bayesfuse[scverse]'.") from exc
    ids = pd.Index([str(s) for s in post.sample_ids], name="sample_id")
    mods = {}
    for h, spec in post.heads.items():
        if isinstance(spec, Categorical):
            lo, hi = post.credible_interval(h, prob)
            obs = post.uncertainty(h).add_prefix("entropy_")
            obs.insert(0, "prediction", post.predict(h).astype(str).to_numpy())
            obs.index = ids
            mods[h] = ad.AnnData(X=post.mean_probs(h).to_numpy(), obs=obs,
                                 var=pd.DataFrame(index=pd.Index([str(c) for c in post.classes(h)], name="class")),
                                 layers={"lower": lo.to_numpy(), "upper": hi.to_numpy()})
        elif isinstance(spec, Survival) and h in post.draws:
            t = _times(post, h, times)
            lo, hi = post.survival_interval(h, t, prob)
            obs = post.median_survival_summary(h, prob).add_prefix("median_survival_")
            obs.index = ids
            mods[h] = ad.AnnData(X=post.survival_mean(h, t).to_numpy(), obs=obs,
                                 var=pd.DataFrame({"time": t}, index=pd.Index([f"{x:g}" for x in t], name="time")),
                                 layers={"lower": lo.to_numpy(), "upper": hi.to_numpy()})
    mdata = mudata.MuData(mods)
    mdata.obs["n_modalities"] = post.n_modalities.reindex(post.sample_ids).to_numpy()
    for m in post.presence.columns:
        mdata.obs[f"has_{m}"] = post.presence[m].to_numpy().astype(bool)
    mdata.obsm["z_mean"] = np.asarray(post.latent_loc)
    mdata.obsm["z_sd"] = np.asarray(post.latent_scale)
    return mdata
