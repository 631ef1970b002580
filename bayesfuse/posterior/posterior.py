"""The :class:`Posterior` returned by :meth:`bayesfuse.FusionModel.predict`.

Everything here is numpy / pandas / xarray: calibration, metrics and plotting consume a
Posterior without touching torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.heads import Categorical, Head

__all__ = ["Posterior"]


def _from_dict(az, groups: dict[str, dict[str, np.ndarray]], coords: dict, dims: dict):
    """``arviz.from_dict`` for arviz 0.x (one keyword per group; InferenceData) and 1.x
    (a ``{group: {var: array}}`` mapping; DataTree). Both expose ``.posterior``."""
    major = int(str(az.__version__).split(".")[0])
    if major >= 1:
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(**groups, coords=coords, dims=dims)


@dataclass
class Posterior:
    """Posterior-predictive draws for a set of patients.

    Attributes
    ----------
    sample_ids : numpy.ndarray, shape (n_patients,)
        Patient ids, in the order of the input data.
    heads : dict[str, Head]
        Head specifications (with fitted class labels / time grids).
    draws : dict[str, dict[str, numpy.ndarray]]
        Per head, named arrays whose two leading axes are ``(num_samples, n_patients)``.
        Categorical heads store ``"probs"`` of shape ``(num_samples, n_patients, n_classes)``.
    latent : numpy.ndarray, shape (num_samples, n_patients, latent_dim)
        Draws of ``z`` from the fused (product-of-experts) posterior.
    latent_loc, latent_scale : numpy.ndarray, shape (n_patients, latent_dim)
        Parameters of the fused Gaussian posterior of ``z``.
    presence : pandas.DataFrame, shape (n_patients, n_modalities)
        Which modalities each patient had (bool), indexed by patient id.
    modality_precision : numpy.ndarray, shape (n_patients, n_modalities, latent_dim)
        Precision each present modality's expert contributed (0 where absent).
    seed : int
        Seed the draws were made with.
    """

    sample_ids: np.ndarray
    heads: dict[str, Head]
    draws: dict[str, dict[str, np.ndarray]]
    latent: np.ndarray
    latent_loc: np.ndarray
    latent_scale: np.ndarray
    presence: pd.DataFrame
    modality_precision: np.ndarray
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ basics
    @property
    def num_samples(self) -> int:
        """Number of posterior draws ``S``."""
        return int(self.latent.shape[0])

    @property
    def n_patients(self) -> int:
        return int(len(self.sample_ids))

    @property
    def n_modalities(self) -> pd.Series:
        """Number of modalities each patient had (0 = scored from the prior)."""
        return self.presence.sum(axis=1).astype(int)

    @property
    def no_modality(self) -> np.ndarray:
        """Boolean flag, shape (n_patients,): patients with no modality (prior predictive)."""
        return self.n_modalities.to_numpy() == 0

    def _head(self, head: str, kind: type | None = None) -> Head:
        if head not in self.heads:
            raise KeyError(f"No head {head!r} in this posterior; heads are {sorted(self.heads)}.")
        spec = self.heads[head]
        if kind is not None and not isinstance(spec, kind):
            raise TypeError(f"Head {head!r} is {spec.kind!r}, not {kind.kind!r}.")  # type: ignore[attr-defined]
        return spec

    def _categorical_heads(self) -> list[str]:
        return [k for k, v in self.heads.items() if isinstance(v, Categorical)]

    # ------------------------------------------------------------ categorical
    def probs(self, head: str) -> np.ndarray:
        """Per-draw class probabilities, shape ``(num_samples, n_patients, n_classes)``."""
        self._head(head, Categorical)
        return self.draws[head]["probs"]

    def classes(self, head: str) -> list:
        """Class labels of ``head`` in the column order of :meth:`probs`."""
        spec = self._head(head, Categorical)
        return list(spec.classes)  # type: ignore[attr-defined]

    def mean_probs(self, head: str) -> pd.DataFrame:
        """Posterior-predictive class probabilities ``E[p(y | z, x)]``, one row per patient."""
        return pd.DataFrame(self.probs(head).mean(axis=0), index=pd.Index(self.sample_ids, name="sample_id"),
                            columns=self.classes(head))

    def predict(self, head: str) -> pd.Series:
        """Most probable class under the posterior predictive (the Bayes decision for 0-1 loss)."""
        mp = self.mean_probs(head)
        return pd.Series(np.asarray(self.classes(head), dtype=object)[mp.to_numpy().argmax(1)],
                         index=mp.index, name=head)

    def credible_interval(self, head: str, prob: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Equal-tailed credible interval of each class probability: ``(lower, upper)`` frames."""
        if not 0 < prob < 1:
            raise ValueError(f"prob={prob} must lie in (0, 1), e.g. 0.9 for a 90% interval.")
        p = self.probs(head)
        a = (1 - prob) / 2
        lo, hi = np.quantile(p, [a, 1 - a], axis=0)
        idx = pd.Index(self.sample_ids, name="sample_id")
        return (pd.DataFrame(lo, index=idx, columns=self.classes(head)),
                pd.DataFrame(hi, index=idx, columns=self.classes(head)))

    def summary(self, head: str | None = None, prob: float = 0.9) -> pd.DataFrame:
        """Tidy summary: one row per (patient, class) with posterior mean and credible bounds.

        Columns: ``sample_id, head, class, mean, lower, upper, n_modalities``.
        """
        heads = [head] if head is not None else self._categorical_heads()
        frames = []
        for h in heads:
            mean = self.mean_probs(h)
            lo, hi = self.credible_interval(h, prob)
            df = pd.DataFrame({
                "sample_id": np.repeat(mean.index.to_numpy(), mean.shape[1]),
                "head": h,
                "class": np.tile(np.asarray(mean.columns, dtype=object), mean.shape[0]),
                "mean": mean.to_numpy().ravel(),
                "lower": lo.to_numpy().ravel(),
                "upper": hi.to_numpy().ravel(),
                "n_modalities": np.repeat(self.n_modalities.to_numpy(), mean.shape[1]),
            })
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=["sample_id", "head", "class", "mean", "lower", "upper", "n_modalities"])
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ arviz
    def to_inference_data(self):
        """Export draws as :class:`arviz.InferenceData` (one chain).

        ``posterior`` holds ``<head>_probs`` with dims ``(chain, draw, patient, <head>_class)``
        and ``z`` with dims ``(chain, draw, patient, latent)``; ``constant_data`` holds the
        presence mask and ``n_modalities``.
        """
        import arviz as az

        pid = [str(s) for s in self.sample_ids]
        posterior: dict[str, np.ndarray] = {"z": self.latent[None]}
        dims: dict[str, list[str]] = {"z": ["patient", "latent"]}
        coords: dict[str, Any] = {"patient": pid, "latent": np.arange(self.latent.shape[-1])}
        for h in self._categorical_heads():
            posterior[f"{h}_probs"] = self.probs(h)[None]
            dims[f"{h}_probs"] = ["patient", f"{h}_class"]
            coords[f"{h}_class"] = [str(c) for c in self.classes(h)]
        for h, arrs in self.draws.items():
            if h in self._categorical_heads():
                continue
            for name, arr in arrs.items():
                var = f"{h}_{name}"
                posterior[var] = arr[None]
                extra_dims = [f"{var}_dim_{i}" for i in range(arr.ndim - 2)]
                dims[var] = ["patient", *extra_dims]
        const = {
            "presence": self.presence.to_numpy().astype(np.int8),
            "n_modalities": self.n_modalities.to_numpy(),
        }
        coords["modality"] = list(self.presence.columns)
        dims.update({"presence": ["patient", "modality"], "n_modalities": ["patient"]})
        return _from_dict(az, {"posterior": posterior, "constant_data": const}, coords=coords, dims=dims)
