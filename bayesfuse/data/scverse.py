"""Readers of scverse containers: AnnData per modality, or one MuData, into the modality tables and targets of
:class:`~bayesfuse.data.multimodal.MultiModalData` (``from_anndata`` / ``from_mudata`` build it from them).

``anndata`` / ``mudata`` are optional (``pip install bayesfuse[scverse]``) and imported only here,
only when called. Conventions:

* ``.X`` (or ``layers[layer]``) is the modality table, ``var_names`` its features and ``obs_names`` the
  sample ids; dense arrays and scipy sparse matrices are read (sparse implicit entries are zeros,
  NaN cells are missing values);
* a sample present in only some modalities is absent from the others (the missing-modality path);
* targets come from an ``obs`` table: the MuData's global ``obs``, the ``obs=`` frame passed to
  :meth:`MultiModalData.from_anndata`, or per-modality ``obs`` columns (MuData's ``"<mod>:<column>"`` or each AnnData's
  own ``obs``), combined over modalities (first non-missing value in modality order);
* a **backed** AnnData (``anndata.read_h5ad(path, backed="r")``, ``mudata.read_h5mu(path, backed=True)``)
  stays on disk: its ``.X`` becomes a :class:`~bayesfuse.data.source.BackedModality` read in row chunks
  by the preprocessing fit and the model's tensor store, so no table is loaded whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.data.source import BackedModality, check_numeric, check_unique_ids
from bayesfuse.exceptions import DataError

__all__ = ["anndata_tables", "mudata_tables", "read_h5mu"]


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:   # pragma: no cover - exercised only without the extra
        raise ImportError(f"{module} is needed to read scverse data; install it with "
                          f"pip install 'bayesfuse[scverse]' (or pip install {module}).") from exc


def _plain(obs: pd.DataFrame) -> pd.DataFrame:
    """``obs`` with categorical columns turned back into plain values (labels kept as the data gives them)."""
    out = obs.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            cats = out[c].cat.categories
            out[c] = np.asarray(out[c].astype(object).where(out[c].notna(), np.nan), dtype=object)
            if pd.api.types.is_numeric_dtype(cats.dtype):
                out[c] = pd.to_numeric(out[c])
    return out


def _matrix(name: str, adata, layer: str | None) -> tuple[Any, str]:
    """The matrix to read (``.X`` or ``layers[layer]``) and where it is, for error messages."""
    if layer is None:
        X = adata.X
        where = ".X"
    else:
        if layer not in adata.layers:
            raise DataError(f"Modality {name!r} has no layer {layer!r}; its layers are {list(adata.layers)}. "
                            "Pass layer=None to read .X.")
        X = adata.layers[layer]
        where = f".layers[{layer!r}]"
    if X is None:
        raise DataError(f"Modality {name!r} has no {where} matrix; pass layer= to read a layer.")
    return X, where


def _is_backed_matrix(X: Any) -> bool:
    return not isinstance(X, np.ndarray) and not hasattr(X, "tocsr") and hasattr(X, "shape")


def _modality_table(name: str, adata, layer: str | None):
    """One AnnData as a sample x feature float64 DataFrame, or a BackedModality if it is backed."""
    X, where = _matrix(name, adata, layer)
    ids, feats = adata.obs_names, adata.var_names
    check_unique_ids(name, pd.Index(ids.map(str)))
    check_numeric(name, getattr(X, "dtype", None), where)
    if getattr(adata, "isbacked", False) and _is_backed_matrix(X):
        return BackedModality(X, ids, feats, owner=adata, name=name)
    if hasattr(X, "toarray"):   # scipy sparse (implicit entries are zeros)
        X = X.toarray()
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:   # e.g. a list-like matrix without a dtype
        raise DataError(f"Modality {name!r}: {where} could not be read as numbers ({exc}); convert it to a "
                        "float matrix or pass layer= to read a numeric layer.") from exc
    return pd.DataFrame(values, index=pd.Index(ids.map(str), name="sample_id"), columns=pd.Index(feats.map(str)),
                        copy=False)


def _select_targets(obs: pd.DataFrame, per_mod: Mapping[str, pd.DataFrame], targets: Sequence[str] | None,
                    ids: pd.Index) -> pd.DataFrame:
    """Target columns: from the global ``obs`` where present, else combined from per-modality columns."""
    obs = _plain(obs).reindex(ids)
    per_mod = {m: _plain(o) for m, o in per_mod.items()}
    if targets is None:   # every global column that is not a prefixed per-modality copy
        prefixes = tuple(f"{m}:" for m in per_mod)
        return obs[[c for c in obs.columns if not str(c).startswith(prefixes)]]
    out = {}
    for t in targets:
        if t in obs.columns:
            out[t] = obs[t]
            continue
        cols = [obs[f"{m}:{t}"] for m in per_mod if f"{m}:{t}" in obs.columns]
        cols += [o[t].reindex(ids) for m, o in per_mod.items() if t in o.columns and f"{m}:{t}" not in obs.columns]
        if not cols:
            avail = sorted({str(c) for c in obs.columns} | {f"{m}:{c}" for m, o in per_mod.items() for c in o.columns})
            raise DataError(f"Target {t!r} is neither an obs column nor a per-modality obs column; available "
                            f"columns are {avail[:20]}. Add it to obs (or obs=clinical_df) or fix the name.")
        col = cols[0].astype(object)
        for other in cols[1:]:
            col = col.where(col.notna(), other.astype(object))
        out[t] = _infer(col)
    return pd.DataFrame(out, index=ids)


def _infer(col: pd.Series) -> pd.Series:
    """Object column of numbers back to a numeric dtype (combining per-modality columns makes it object)."""
    if col.dtype == object:
        num = pd.to_numeric(col, errors="coerce")
        if (num.notna() == col.notna()).all():
            return num
    return col


def anndata_tables(adatas: Mapping[str, Any], obs: pd.DataFrame | None = None,
                   targets: Sequence[str] | None = None, layer: str | Mapping[str, str | None] | None = None
                   ) -> tuple[dict[str, pd.DataFrame | BackedModality], pd.DataFrame]:
    """Modality tables and targets of one AnnData per modality (see :meth:`MultiModalData.from_anndata`).

    Returns
    -------
    modalities : dict[str, pandas.DataFrame or BackedModality]
        Samples x features per modality (a backed ``.X`` stays on disk).
    targets : pandas.DataFrame
        Indexed by ``sample_id``.
    """
    if not isinstance(adatas, Mapping) or not adatas:
        raise DataError("from_anndata expects a non-empty dict {modality name: AnnData}.")
    mods, per_mod = {}, {}
    for m, a in adatas.items():
        if not hasattr(a, "obs_names") or not hasattr(a, "var_names"):
            raise DataError(f"Modality {m!r} is a {type(a).__name__}, not an AnnData; pass "
                            "{'name': anndata.AnnData, ...} (or use MultiModalData.from_frames for DataFrames).")
        lay = layer.get(m) if isinstance(layer, Mapping) else layer
        mods[str(m)] = _modality_table(str(m), a, lay)
        per_mod[str(m)] = pd.DataFrame(a.obs).set_axis(a.obs_names.map(str), axis=0)
    if obs is not None:
        if not isinstance(obs, pd.DataFrame):
            raise DataError(f"obs must be a DataFrame indexed by sample id, got {type(obs).__name__}.")
        table = obs.set_index("sample_id") if "sample_id" in obs.columns else obs
        ids = pd.Index(table.index.map(str), name="sample_id")
        table = _plain(table.set_axis(ids, axis=0))
        tg = table if targets is None else table[_known(list(targets), table)]
    else:
        seen: dict[str, None] = {}
        for df in mods.values():
            seen.update(dict.fromkeys(df.index))
        ids = pd.Index(list(seen), name="sample_id", dtype=object)
        if targets is None:
            targets = list(dict.fromkeys(str(c) for o in per_mod.values() for c in o.columns))
        tg = _select_targets(pd.DataFrame(index=ids), per_mod, targets, ids)
    tg.index.name = "sample_id"
    return mods, tg


def _known(cols: list[str], table: pd.DataFrame) -> list[str]:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise DataError(f"targets {missing} are not columns of obs; its columns are {list(table.columns)[:20]}.")
    return cols


def mudata_tables(mdata, targets: Sequence[str] | None = None, layer: str | Mapping[str, str | None] | None = None,
                  modalities: Sequence[str] | None = None
                  ) -> tuple[dict[str, pd.DataFrame | BackedModality], pd.DataFrame]:
    """Modality tables and targets of a MuData or ``.h5mu`` path (see :meth:`MultiModalData.from_mudata`);
    returns ``(modalities, targets)`` as :func:`anndata_tables`, samples in ``mdata.obs_names`` order."""
    if isinstance(mdata, (str, Path)):
        mdata = read_h5mu(mdata)
    if not hasattr(mdata, "mod"):
        raise DataError(f"from_mudata expects a mudata.MuData, got {type(mdata).__name__}; for a dict of AnnData "
                        "use MultiModalData.from_anndata.")
    names = list(mdata.mod) if modalities is None else list(modalities)
    unknown = [m for m in names if m not in mdata.mod]
    if unknown:
        raise DataError(f"Modalities {unknown} are not in the MuData; its modalities are {list(mdata.mod)}.")
    mods, per_mod = {}, {}
    for m in names:
        a = mdata.mod[m]
        lay = layer.get(m) if isinstance(layer, Mapping) else layer
        mods[m] = _modality_table(m, a, lay)
        per_mod[m] = pd.DataFrame(a.obs).set_axis(a.obs_names.map(str), axis=0)
    ids = pd.Index(mdata.obs_names.map(str), name="sample_id")
    obs = pd.DataFrame(mdata.obs).set_axis(ids, axis=0)
    tg = _select_targets(obs, per_mod, targets, ids)
    tg.index.name = "sample_id"
    return mods, tg


def read_h5mu(path: str | Path, backed: bool = False):
    """Read an ``.h5mu`` file with mudata (``backed=True``: the modality matrices stay on disk)."""
    md = _require("mudata")
    path = Path(path)
    if not path.exists():
        raise DataError(f"MuData file {str(path)!r} does not exist.")
    try:
        return md.read_h5mu(str(path), backed=backed)
    except (OSError, ValueError, KeyError) as exc:   # not HDF5, truncated, or not a MuData layout
        raise DataError(f"{str(path)!r} could not be read as a MuData .h5mu file ({exc}); check that it is "
                        "complete and was written by mudata (mdata.write(path)).") from exc
