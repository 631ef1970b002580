"""The :class:`Latent` returned by :meth:`bayesfuse.FusionModel.latent` (numpy / pandas; anndata on export)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Latent"]


@dataclass
class Latent:
    """Fused posterior ``q(z | x_present)`` of each patient: mean and standard deviation.

    Attributes
    ----------
    sample_ids : numpy.ndarray, shape (n_patients,)
    mean, sd : numpy.ndarray, shape (n_patients, latent_dim)
        Posterior mean and sd of ``z`` (``Posterior.latent_loc`` / ``latent_scale``).
    presence : pandas.DataFrame, shape (n_patients, n_modalities)
        Which modalities each patient had (bool).
    """

    sample_ids: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    presence: pd.DataFrame

    @property
    def latent_dim(self) -> int:
        return int(self.mean.shape[1])

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=pd.Index(self.sample_ids, name="sample_id"),
                            columns=pd.Index([f"z{d}" for d in range(self.latent_dim)], name="latent"))

    def mean_frame(self) -> pd.DataFrame:
        """Posterior mean of ``z``: patients x ``z0 .. z{D-1}``."""
        return self._frame(self.mean)

    def sd_frame(self) -> pd.DataFrame:
        """Posterior sd of ``z``: patients x ``z0 .. z{D-1}``."""
        return self._frame(self.sd)

    def to_frame(self) -> pd.DataFrame:
        """One frame indexed by sample id: columns ``(stat, latent)`` with stat in ``mean, sd``, then
        ``("n_modalities", "")``."""
        df = pd.concat({"mean": self.mean_frame(), "sd": self.sd_frame()}, axis=1)
        df[("n_modalities", "")] = self.presence.sum(axis=1).astype(int).to_numpy()
        return df

    def to_anndata(self):
        """AnnData (patients x 0 variables) with ``obsm["z_mean"]``, ``obsm["z_sd"]`` (n_patients, latent_dim)
        and ``obs`` = presence of each modality + ``n_modalities``: ready for ``scanpy.pp.neighbors(adata,
        use_rep="z_mean")`` and UMAP. Needs ``anndata`` (``pip install bayesfuse[scverse]``)."""
        from bayesfuse.posterior.export import _anndata  # noqa: PLC0415

        ad = _anndata()
        obs = self.presence.astype(bool).copy()
        obs.columns = [f"has_{m}" for m in obs.columns]
        obs["n_modalities"] = self.presence.sum(axis=1).astype(int).to_numpy()
        obs.index = pd.Index([str(s) for s in self.sample_ids], name="sample_id")
        return ad.AnnData(X=np.zeros((len(obs), 0)), obs=obs,
                          obsm={"z_mean": np.asarray(self.mean), "z_sd": np.asarray(self.sd)})

    def __repr__(self) -> str:
        return f"Latent({len(self.sample_ids)} patients x {self.latent_dim} dims)"
