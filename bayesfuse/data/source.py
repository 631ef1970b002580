"""`BackedModality`: a modality table that stays on disk and is read in row chunks.

A :class:`~bayesfuse.data.MultiModalData` normally holds one pandas DataFrame per modality. For a
cohort larger than memory (an AnnData opened with ``backed="r"``) it holds a :class:`BackedModality`
instead: the sample ids and feature names are in memory, the values are read from the on-disk
matrix (dense HDF5 dataset or backed CSR/CSC) only when a chunk of rows is asked for.

It answers the read-only part of the DataFrame protocol that the data and model layers use
(``index``, ``columns``, ``shape``, ``iloc[rows]`` -> a small DataFrame chunk, ``drop(columns=)``)
plus :meth:`rows` (an ndarray of rows) and :meth:`iter_chunks` (the streaming preprocessing fit,
:mod:`bayesfuse.data.streaming_fit`). Row and column selections are lazy: nothing is copied until
values are read. Values are always returned as float64 (the dtype of in-memory tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayesfuse.exceptions import DataError

__all__ = ["BackedModality", "CHUNK_CELLS", "check_numeric", "check_unique_ids"]

CHUNK_CELLS = 1 << 22  # cells per row chunk read from disk (32 MiB of float64)


def _to_dense(block: Any) -> np.ndarray:
    """A read block (ndarray, scipy sparse, h5py result) as a float64 ndarray."""
    if hasattr(block, "toarray"):   # scipy sparse: implicit entries are zeros, not missing values
        block = block.toarray()
    return np.asarray(block, dtype=np.float64)


def check_unique_ids(name: str, index: pd.Index) -> None:
    """DataError naming the repeated ``obs_names`` of an AnnData modality (and the fix)."""
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:5].tolist()
        raise DataError(f"Modality {name!r} has duplicated sample ids (obs_names) {dup}; each sample must appear "
                        "once. Aggregate or drop the repeats (adata = adata[~adata.obs_names.duplicated()]), or "
                        "rename them with adata.obs_names_make_unique() if they are distinct samples.")


def check_numeric(name: str, dtype: Any, where: str = ".X") -> None:
    """DataError when a modality matrix holds text / objects instead of numbers (names the fix).

    ``where`` is ``".X"`` / ``".layers['name']"`` (an AnnData attribute) or a plain description."""
    if dtype is None or np.dtype(dtype).kind in "biuf":
        return
    fix = (f"convert it (e.g. adata{where} = adata{where}.astype(float)) or pass layer= to read a numeric layer"
           if where.startswith(".") else "convert it to a numeric matrix")
    raise DataError(f"Modality {name!r}: {where} has dtype {np.dtype(dtype)}, not numbers; {fix}.")


class _ILoc:
    def __init__(self, owner: BackedModality):
        self._owner = owner

    def __getitem__(self, rows) -> pd.DataFrame:
        pos = np.arange(self._owner.shape[0])[rows]
        pos = np.atleast_1d(pos)
        return pd.DataFrame(self._owner.rows(pos), index=self._owner.index[pos], columns=self._owner.columns,
                            copy=False)


class BackedModality:
    """One modality whose values live in an on-disk (or any row-sliceable) matrix.

    Parameters
    ----------
    matrix : array-like, shape (n_rows, n_cols)
        Supports ``matrix[a:b]`` (contiguous row slices) returning an ndarray or a scipy sparse
        matrix: an h5py dataset, an anndata backed sparse dataset, a numpy memmap.
    index : sequence of str, shape (n_rows,)
        Sample id of every matrix row (``obs_names``).
    columns : sequence of str, shape (n_cols,)
        Feature name of every matrix column (``var_names``).
    owner : object, optional
        Kept alive with this object (e.g. the backed AnnData holding the open file).
    name : str
        Modality name, for error messages.

    Notes
    -----
    ``rows`` / ``cols`` (internal) select and order the matrix rows and columns this view shows;
    :meth:`take` and :meth:`drop` return new views sharing the matrix.
    """

    def __init__(self, matrix: Any, index: Sequence, columns: Sequence, owner: Any = None, name: str = "",
                 _rows: np.ndarray | None = None, _cols: np.ndarray | None = None):
        self._matrix = matrix
        self._owner = owner
        self.name = name
        shape = tuple(matrix.shape)
        if len(shape) != 2:
            raise DataError(f"Modality {name!r}: the backed matrix must be 2-D (samples x features), got shape {shape}.")
        check_numeric(name, getattr(matrix, "dtype", None), "the backed matrix")
        self._rows = np.arange(shape[0]) if _rows is None else np.asarray(_rows, dtype=np.int64)
        self._cols = np.arange(shape[1]) if _cols is None else np.asarray(_cols, dtype=np.int64)
        index = pd.Index(index)
        columns = pd.Index(columns)
        if len(index) != len(self._rows) or len(columns) != len(self._cols):
            raise DataError(f"Modality {name!r}: {len(index)} sample ids and {len(columns)} feature names for a "
                            f"matrix view of shape ({len(self._rows)}, {len(self._cols)}); they must match.")
        self.index = pd.Index(index.map(str), name="sample_id")
        self.columns = pd.Index(columns.map(str))
        self._all_cols = bool(len(self._cols) == shape[1] and np.array_equal(self._cols, np.arange(shape[1])))

    # ------------------------------------------------------------ protocol
    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows), len(self._cols))

    @property
    def n_features(self) -> int:
        return len(self._cols)

    @property
    def feature_names(self) -> list[str]:
        return list(self.columns)

    @property
    def iloc(self) -> _ILoc:
        """``iloc[rows]``: the rows at these positions as a float64 DataFrame (read from disk)."""
        return _ILoc(self)

    def chunk_rows(self) -> int:
        """Rows per chunk so that a chunk holds about :data:`CHUNK_CELLS` float64 cells."""
        return max(1, CHUNK_CELLS // max(int(self._matrix.shape[1]), 1))

    def _read(self, mat_rows: np.ndarray) -> np.ndarray:
        """Matrix rows ``mat_rows`` (sorted, increasing), shape (k, n_cols of the view)."""
        out = np.empty((len(mat_rows), self.n_features))
        if len(mat_rows) == 0:
            return out
        span = 4 * self.chunk_rows()
        i = 0
        while i < len(mat_rows):
            lo = mat_rows[i]
            j = int(np.searchsorted(mat_rows, lo + span, side="left"))
            hi = mat_rows[j - 1] + 1
            block = _to_dense(self._matrix[int(lo):int(hi)])   # one contiguous read
            block = block[mat_rows[i:j] - lo]
            out[i:j] = block if self._all_cols else block[:, self._cols]
            i = j
        return out

    def rows(self, positions: Iterable[int]) -> np.ndarray:
        """Values of the rows at ``positions`` (in this view's order), shape (k, n_features), float64."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        mat = self._rows[pos]
        order = np.argsort(mat, kind="stable")
        out = np.empty((len(pos), self.n_features))
        out[order] = self._read(mat[order])
        return out

    def iter_chunks(self, rows_per_chunk: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(row slice, values (k, n_features))`` over every row of the view, in order."""
        step = rows_per_chunk or self.chunk_rows()
        for start in range(0, self.shape[0], step):
            stop = min(self.shape[0], start + step)
            yield slice(start, stop), self.rows(np.arange(start, stop))

    # -------------------------------------------------------------- views
    def _view(self, rows: np.ndarray, cols: np.ndarray, index: pd.Index, columns: pd.Index) -> BackedModality:
        return BackedModality(self._matrix, index, columns, owner=self._owner, name=self.name, _rows=rows, _cols=cols)

    def take(self, positions: Iterable[int]) -> BackedModality:
        """Lazy view of the rows at ``positions`` (in that order)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        return self._view(self._rows[pos], self._cols, self.index[pos], self.columns)

    def take_ids(self, ids: Iterable) -> BackedModality:
        """Lazy view of the rows with these sample ids (in that order; every id must be present)."""
        pos = self.index.get_indexer(pd.Index(ids))
        if (pos < 0).any():
            raise KeyError(f"Modality {self.name!r} has no rows for some of the requested sample ids.")
        return self.take(pos)

    def drop(self, columns: Iterable[str]) -> BackedModality:
        """Lazy view without the named feature columns."""
        keep = ~self.columns.isin(list(columns))
        return self._view(self._rows, self._cols[keep], self.index, self.columns[keep])

    def to_frame(self) -> pd.DataFrame:
        """Every row read into one float64 DataFrame (loads the whole view into memory)."""
        return pd.DataFrame(self.rows(np.arange(self.shape[0])), index=self.index, columns=self.columns, copy=False)

    # ---------------------------------------------------------- validation
    def validated(self) -> BackedModality:
        """Check ids, names and values (one pass over the file) as in-memory tables are checked.

        Duplicated ids or names and inf values are errors; rows that are entirely NaN are
        dropped (the sample does not have the modality).
        """
        m = self.name
        check_unique_ids(m, self.index)
        if self.columns.has_duplicates:
            dup = self.columns[self.columns.duplicated()].unique()[:5].tolist()
            raise DataError(f"Modality {m!r} has duplicated feature names {dup}; rename them "
                            "(AnnData: adata.var_names_make_unique()).")
        if self.n_features == 0:
            raise DataError(f"Modality {m!r} has no feature columns; leave it out.")
        all_nan = np.zeros(self.shape[0], dtype=bool)
        for rows, v in self.iter_chunks():
            if np.isinf(v).any():
                raise DataError(f"Modality {m!r} contains inf values; replace them with NaN (missing) or "
                                "finite values.")
            all_nan[rows] = np.isnan(v).all(axis=1)
        if self.shape[0] and all_nan.all():
            raise DataError(f"Modality {m!r} is entirely NaN: it carries no information. Leave it out.")
        return self.take(np.flatnonzero(~all_nan)) if all_nan.any() else self

    def __repr__(self) -> str:
        return f"BackedModality({self.name!r}, {self.shape[0]} x {self.shape[1]}, {type(self._matrix).__name__})"
