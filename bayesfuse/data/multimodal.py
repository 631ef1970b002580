"""`MultiModalData`: per-modality tables aligned by sample id, plus targets.

Rows of a modality table are the samples that HAVE that modality; a sample without it is
absent from the table. NaN cells are single missing values inside an observed modality.
This is the only layer that reads files; everything downstream sees aligned frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesfuse.data.source import BackedModality
from bayesfuse.exceptions import ArgumentError, DataError

__all__ = ["MultiModalData"]

_SUFFIXES = (".csv.gz", ".csv")


_CHECK_ROWS = 16384  # rows per block when scanning values for inf / NaN (bounds boolean temporaries)


def _take_ids(df: pd.DataFrame | BackedModality, rows: pd.Index) -> pd.DataFrame | BackedModality:
    """Rows ``rows`` (sample ids) of an in-memory table (``.loc``) or a lazy view of a backed one."""
    return df.take_ids(rows) if isinstance(df, BackedModality) else df.loc[rows]


def _clean_modality(name: str, df: pd.DataFrame, copy: bool = True) -> pd.DataFrame:
    """Validate one modality table and return it indexed by string sample id.

    The caller's frame is never modified. The values are converted to one float64 array
    with at most one copy: with ``copy=False`` a frame that is already a single float64
    block is used without copying (its memory is then shared with the result).
    """
    if isinstance(df, BackedModality):   # on-disk table: checked in one pass over the file, never loaded
        df.name = name
        return df.validated()
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"Modality {name!r} must be a pandas DataFrame, got {type(df).__name__}.")
    if "sample_id" in df.columns:
        index = pd.Index(df["sample_id"])
        df = df.drop(columns="sample_id")
    else:
        index = df.index
    index = pd.Index(index.map(str), name="sample_id")
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:5].tolist()
        raise DataError(f"Modality {name!r} has duplicated sample ids {dup}; each sample must appear once. "
                        "Aggregate or drop the repeats before building MultiModalData.")
    columns = pd.Index(df.columns.map(str))
    if columns.has_duplicates:
        dup = columns[columns.duplicated()].unique()[:5].tolist()
        raise DataError(f"Modality {name!r} has duplicated feature names {dup}; rename them (e.g. suffix .1, .2).")
    if df.shape[1] == 0:
        raise DataError(f"Modality {name!r} has no feature columns; drop it with drop_modalities([{name!r}]).")
    bad = [str(c) for c, dt in zip(df.columns, df.dtypes)
           if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))]
    if bad:
        raise DataError(f"Modality {name!r} has non-numeric columns {bad[:5]}; encode them as numbers "
                        "(e.g. one-hot) or move them to the targets table.")
    # One float64 array (n, F); nullable integer/boolean columns turn pd.NA into NaN.
    values = df.to_numpy(dtype=np.float64, na_value=np.nan, copy=copy)
    n = values.shape[0]
    all_nan = np.zeros(n, dtype=bool)
    any_inf = False
    for start in range(0, n, _CHECK_ROWS):
        block = values[start:start + _CHECK_ROWS]
        any_inf = any_inf or bool(np.isinf(block).any())
        all_nan[start:start + _CHECK_ROWS] = np.isnan(block).all(axis=1)
    if any_inf:
        raise DataError(f"Modality {name!r} contains inf values; replace them with NaN (missing) or finite values.")
    if n > 0 and all_nan.all():
        raise DataError(f"Modality {name!r} is entirely NaN: it carries no information. "
                        f"Drop it with drop_modalities([{name!r}]) or fix how it was read.")
    # A row that is entirely NaN means the sample does not have this modality.
    if all_nan.any():
        values, index = values[~all_nan], index[~all_nan]
    return pd.DataFrame(values, index=index, columns=columns, copy=False)


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) with a ``sample_id`` column as a DataFrame indexed by it.

    A missing, truncated, binary or otherwise unreadable file, or one without a ``sample_id``
    column, is a :class:`DataError` naming the file (never a pandas / zlib traceback).
    """
    import zlib  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file {str(path)!r} does not exist; check the path.")
    try:
        df = pd.read_csv(path, dtype={"sample_id": str})
    except (ValueError, OSError, EOFError, zlib.error, pd.errors.ParserError) as exc:   # incl. UnicodeDecodeError
        raise DataError(f"{what}: {str(path)!r} could not be read as a CSV table ({type(exc).__name__}: "
                        f"{str(exc)[:120]}); the file is truncated, corrupt or not a CSV. Re-export it as CSV "
                        "(optionally .csv.gz) with a sample_id column.") from exc
    if "sample_id" not in df.columns:
        raise DataError(f"{what}: {str(path)!r} has no 'sample_id' column (columns: {list(df.columns)[:5]}); the "
                        "first column must be named sample_id and hold the patient ids.")
    return df.set_index("sample_id")


class MultiModalData:
    """Multimodal cohort: modality tables and targets aligned by sample id.

    Parameters
    ----------
    modalities : dict[str, pandas.DataFrame]
        Per modality, a table with one row per sample that has the modality (index or a
        ``sample_id`` column = sample id) and one numeric column per feature.
    targets : pandas.DataFrame, optional
        One row per sample (index or ``sample_id`` column) with target columns such as
        ``subtype``, ``origin``, ``time``, ``event``, ``split``. When given, it defines the
        sample order and must list every sample of every modality.
    name : str, optional
        Cohort name, used in reports.
    copy : bool, default True
        Copy the modality values (once, into float64). The caller's frames are never
        modified either way; with ``copy=False`` a frame that already holds one float64
        block shares its memory with this object (no copy: half the peak memory for large
        cohorts), so the caller must not modify it afterwards.

    Notes
    -----
    ``sample_ids`` is the order of every output: the targets' row order when targets are
    given, otherwise the order of first appearance over the modalities (in dict order).
    """

    def __init__(self, modalities: Mapping[str, pd.DataFrame], targets: pd.DataFrame | None = None,
                 name: str | None = None, copy: bool = True):
        if not isinstance(modalities, Mapping):
            raise DataError("modalities must be a dict mapping modality name -> DataFrame.")
        mods = {str(k): _clean_modality(str(k), v, copy=copy) for k, v in modalities.items()}
        if targets is not None:
            if not isinstance(targets, pd.DataFrame):
                raise DataError(f"targets must be a DataFrame, got {type(targets).__name__}.")
            targets = targets.copy()
            if "sample_id" in targets.columns:
                targets = targets.set_index("sample_id")
            targets.index = targets.index.map(str)
            targets.index.name = "sample_id"
            if targets.index.has_duplicates:
                dup = targets.index[targets.index.duplicated()].unique()[:5].tolist()
                raise DataError(f"targets has duplicated sample ids {dup}; each sample must appear once.")
            ids = targets.index
            for m, df in mods.items():
                missing = df.index.difference(ids)
                if len(missing):
                    raise DataError(
                        f"Misaligned sample ids: {len(missing)} sample(s) of modality {m!r} are not in targets "
                        f"(e.g. {missing[:3].tolist()}). Add them to targets (unknown targets may be empty) "
                        "or remove them from the modality table.")
        else:
            seen: dict[str, None] = {}
            for df in mods.values():
                seen.update(dict.fromkeys(df.index))
            ids = pd.Index(list(seen), name="sample_id", dtype=object)
            targets = pd.DataFrame(index=ids)
        if len(ids) == 0:
            raise DataError("No samples: every modality table and the targets are empty.")
        self._modalities = mods
        self._targets = targets
        self.name = name

    # --------------------------------------------------------------- builders
    @classmethod
    def from_frames(cls, modalities: Mapping[str, pd.DataFrame], targets: pd.DataFrame | None = None,
                    name: str | None = None, copy: bool = True) -> MultiModalData:
        """Build from pandas frames (see the class docstring for the layout and ``copy``)."""
        return cls(modalities, targets=targets, name=name, copy=copy)

    @classmethod
    def from_anndata(cls, adatas: Mapping, obs: pd.DataFrame | None = None, targets: Sequence[str] | None = None,
                     layer: str | Mapping[str, str | None] | None = None, name: str | None = None) -> MultiModalData:
        """Build from one AnnData per modality (needs ``anndata``: ``pip install bayesfuse[scverse]``).

        Parameters
        ----------
        adatas : dict[str, anndata.AnnData]
            Modality name -> AnnData (samples x features): ``.X`` (dense or scipy sparse; implicit
            sparse entries are zeros) or ``layers[layer]`` = values, ``var_names`` = features,
            ``obs_names`` = sample ids. In memory or backed (``anndata.read_h5ad(path, backed="r")``):
            a backed matrix stays on disk (:class:`~bayesfuse.data.source.BackedModality`) and is read
            in row chunks.
        obs : pandas.DataFrame, optional
            Sample table (index = sample ids), e.g. clinical data with ``subtype``, ``time``,
            ``event``, ``split``. When given it defines the sample order and must list every sample.
            Default: targets combined from the AnnDatas' own ``obs`` (first non-missing value in
            modality order).
        targets : list of str, optional
            Columns to keep as targets (default: every column of ``obs``; with ``obs=None``, the
            union of the per-modality ``obs`` columns).
        layer : str or dict[str, str or None], optional
            Read ``layers[layer]`` instead of ``.X`` (one name for all, or per modality).
        name : str, optional
            Cohort name.

        Returns
        -------
        MultiModalData
            A sample missing from a modality's ``obs_names`` lacks that modality.
        """
        from bayesfuse.data.scverse import anndata_tables  # noqa: PLC0415

        mods, tg = anndata_tables(adatas, obs=obs, targets=targets, layer=layer)
        return cls(mods, targets=tg, name=name, copy=False)   # frames built by the reader: no second copy

    @classmethod
    def from_mudata(cls, mdata, targets: Sequence[str] | None = None,
                    layer: str | Mapping[str, str | None] | None = None, modalities: Sequence[str] | None = None,
                    name: str | None = None) -> MultiModalData:
        """Build from a MuData (``mdata.mod`` = modalities; needs ``pip install bayesfuse[scverse]``).

        Parameters
        ----------
        mdata : mudata.MuData or str or Path
            In memory, backed (``mudata.read_h5mu(path, backed=True)``: every ``.X`` stays on disk), or
            a path to an ``.h5mu`` file (read in memory; :func:`bayesfuse.data.scverse.read_h5mu` reads
            it backed).
        targets : list of str, optional
            Target columns, looked up in the global ``mdata.obs`` first, then as per-modality columns
            (``"<mod>:<column>"`` in ``mdata.obs`` or ``mdata[mod].obs[column]``), combined over
            modalities. Default: every global ``obs`` column (the ``"<mod>:"``-prefixed copies left out).
        layer : str or dict[str, str or None], optional
            Read ``layers[layer]`` instead of ``.X`` (one name for all, or per modality).
        modalities : list of str, optional
            Modalities to read (default: all, in ``mdata.mod`` order).
        name : str, optional
            Cohort name.

        Returns
        -------
        MultiModalData
            Samples in ``mdata.obs_names`` order (the union over modalities: a sample missing from a
            modality lacks it).
        """
        from bayesfuse.data.scverse import mudata_tables  # noqa: PLC0415

        mods, tg = mudata_tables(mdata, targets=targets, layer=layer, modalities=modalities)
        return cls(mods, targets=tg, name=name, copy=False)

    @classmethod
    def read_dir(cls, path: str | Path, modalities: Sequence[str] | None = None,
                 drop_features: Mapping[str, Iterable[str]] | None = None) -> MultiModalData:
        """Read the shared directory layout: ``<modality>.csv.gz`` files plus ``targets.csv``.

        Parameters
        ----------
        path : str or Path
            Dataset folder.
        modalities : list of str, optional
            Modalities to read (default: every ``*.csv.gz`` / ``*.csv`` except targets).
        drop_features : dict[str, list[str]], optional
            Feature columns to drop per modality, e.g. label-defining (leakage) columns.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"Dataset folder {str(path)!r} does not exist; pass the folder that holds "
                            "<modality>.csv.gz files and targets.csv.")
        files: dict[str, Path] = {}
        for f in sorted(path.iterdir()):
            for suf in _SUFFIXES:
                if f.name.endswith(suf) and f.name[: -len(suf)] != "targets":
                    files.setdefault(f.name[: -len(suf)], f)
        if modalities is not None:
            unknown = [m for m in modalities if m not in files]
            if unknown:
                raise DataError(f"Modalities {unknown} not found in {path}; available: {sorted(files)}.")
            files = {m: files[m] for m in modalities}
        if not files:
            raise DataError(f"No <modality>.csv.gz files in {path}.")
        mods = {m: read_table(f, f"modality {m!r}") for m, f in files.items()}
        targets = None
        tpath = path / "targets.csv"
        if tpath.exists():
            targets = read_table(tpath, "targets")
        data = cls(mods, targets=targets, name=path.name, copy=False)  # frames read here: no copy needed
        if drop_features:
            data = data.drop_features(drop_features)
        return data

    # ------------------------------------------------------------- accessors
    @property
    def sample_ids(self) -> np.ndarray:
        """Sample ids in output order, shape (n_samples,)."""
        return self._targets.index.to_numpy(dtype=object)

    @property
    def n_samples(self) -> int:
        return len(self._targets.index)

    @property
    def backed(self) -> dict[str, bool]:
        """Per modality, True when its values stay on disk (read in row chunks; see :meth:`from_anndata`)."""
        return {m: isinstance(df, BackedModality) for m, df in self._modalities.items()}

    @property
    def modality_names(self) -> list[str]:
        return list(self._modalities)

    @property
    def targets(self) -> pd.DataFrame:
        """Targets table indexed by sample id (same order as :attr:`sample_ids`)."""
        return self._targets

    def modality(self, name: str) -> pd.DataFrame:
        """Table of modality ``name``: rows = samples that have it, in :attr:`sample_ids` order."""
        if name not in self._modalities:
            raise KeyError(f"No modality {name!r}; modalities are {self.modality_names}.")
        df = self._modalities[name]
        rows = self._targets.index.intersection(df.index, sort=False)
        if isinstance(df, BackedModality):   # a backed table is read into memory here
            return df.take_ids(rows).to_frame()
        return df.loc[rows]

    def _modality_frame(self, name: str) -> pd.DataFrame:
        """Internal, read-only :meth:`modality`: the stored frame itself when its rows are already
        in :attr:`sample_ids` order (no copy of a large table); callers must not modify it. A backed
        modality comes back as a lazy :class:`~bayesfuse.data.source.BackedModality` view (read in row
        chunks by the preprocessing fit and ``FusionModel._store``)."""
        df = self._modalities[name]
        rows = self._targets.index.intersection(df.index, sort=False)
        return df if rows.equals(df.index) else _take_ids(df, rows)

    def features(self, name: str) -> list[str]:
        """Feature (column) names of modality ``name``."""
        if name not in self._modalities:
            raise KeyError(f"No modality {name!r}; modalities are {self.modality_names}.")
        return list(self._modalities[name].columns)

    @property
    def presence(self) -> pd.DataFrame:
        """Boolean table (n_samples, n_modalities): which modalities each sample has."""
        idx = self._targets.index
        return pd.DataFrame({m: idx.isin(df.index) for m, df in self._modalities.items()}, index=idx)

    def missingness_patterns(self) -> pd.Series:
        """Counts of samples per pattern of present modalities (``"none"`` = no modality)."""
        pres = self.presence
        labels = pres.apply(lambda r: " + ".join(c for c in pres.columns if r[c]) or "none", axis=1)
        return labels.value_counts()

    # ---------------------------------------------------------- transformers
    def subset(self, split: str | Sequence[str] | None = None, ids: Iterable | None = None) -> MultiModalData:
        """Samples of one split (``targets['split']``) or an explicit id list (kept in the given order)."""
        if (split is None) == (ids is None):
            raise ArgumentError("Pass exactly one of split= or ids=.")
        if split is not None:
            if "split" not in self._targets.columns:
                raise DataError("targets has no 'split' column; use subset(ids=...) or add a split column "
                                "(bf.calibration.make_splits can make one).")
            splits = [split] if isinstance(split, str) else list(split)
            known = set(self._targets["split"].dropna().unique())
            unknown = [s for s in splits if s not in known]
            if unknown:
                raise DataError(f"split {unknown} not found; the targets' splits are {sorted(known)}.")
            keep = self._targets.index[self._targets["split"].isin(splits)]
        else:
            keep = pd.Index([str(i) for i in ids])
            if keep.has_duplicates:
                raise DataError("ids contains duplicates; pass each sample id once.")
            missing = keep.difference(self._targets.index)
            if len(missing):
                raise DataError(f"{len(missing)} id(s) not in this data (e.g. {missing[:3].tolist()}).")
        mods = {}
        for m, df in self._modalities.items():
            rows = df.index.intersection(keep)
            mods[m] = df if rows.equals(df.index) else _take_ids(df, rows)  # frames are shared, never modified
        return MultiModalData._unchecked(mods, self._targets.loc[keep], self.name)

    def drop_modalities(self, names: Iterable[str]) -> MultiModalData:
        """Copy without the named modalities (their samples stay, possibly with no modality)."""
        names = list(names)
        unknown = [n for n in names if n not in self._modalities]
        if unknown:
            raise DataError(f"Cannot drop unknown modalities {unknown}; modalities are {self.modality_names}.")
        mods = {m: df for m, df in self._modalities.items() if m not in names}
        return MultiModalData._unchecked(mods, self._targets, self.name)

    def select_modalities(self, names: Iterable[str]) -> MultiModalData:
        """Copy with only the named modalities (in the given order)."""
        names = list(names)
        unknown = [n for n in names if n not in self._modalities]
        if unknown:
            raise DataError(f"Unknown modalities {unknown}; modalities are {self.modality_names}.")
        return MultiModalData._unchecked({m: self._modalities[m] for m in names}, self._targets, self.name)

    def drop_features(self, features: Mapping[str, Iterable[str]], errors: str = "raise") -> MultiModalData:
        """Copy without the given feature columns, e.g. ``{"mutation": ["IDH1", "IDH2"]}``."""
        mods = dict(self._modalities)
        for m, cols in features.items():
            if m not in mods:
                if errors == "raise":
                    raise DataError(f"drop_features names unknown modality {m!r}; modalities are {self.modality_names}.")
                continue
            cols = list(cols)
            missing = [c for c in cols if c not in mods[m].columns]
            if missing and errors == "raise":
                raise DataError(f"Modality {m!r} has no columns {missing}; pass errors='ignore' to skip them.")
            mods[m] = mods[m].drop(columns=[c for c in cols if c in mods[m].columns])
            if mods[m].shape[1] == 0:
                raise DataError(f"Dropping these features leaves modality {m!r} empty; drop the modality instead.")
        return MultiModalData._unchecked(mods, self._targets, self.name)

    def with_modality(self, name: str, df: pd.DataFrame) -> MultiModalData:
        """Copy with modality ``name`` replaced (or added) by ``df`` (ids must be known)."""
        mods = dict(self._modalities)
        mods[name] = _clean_modality(str(name), df)
        return MultiModalData(mods, targets=self._targets, name=self.name, copy=False)

    @classmethod
    def _unchecked(cls, mods: dict[str, pd.DataFrame], targets: pd.DataFrame, name: str | None) -> MultiModalData:
        obj = cls.__new__(cls)
        obj._modalities = mods
        obj._targets = targets
        obj.name = name
        return obj

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        mods = ", ".join(f"{m} {df.shape[0]}x{df.shape[1]}" for m, df in self._modalities.items())
        tcols = [c for c in self._targets.columns]
        label = f" {self.name!r}" if self.name else ""
        return f"MultiModalData{label}: {self.n_samples} samples; modalities: {mods}; targets: {tcols}"
