"""AnnData access shared by every model: layers, chunked (backed-safe) reads, validation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData


def check_layer(
    adata: AnnData, layer: str | None, where: str = "adata", fix: str | None = None
) -> None:
    """Raise a clear ``KeyError`` if ``layer`` is not in ``adata.layers``.

    Also when ``layer`` is None and ``adata.X`` is empty. ``where`` names ``adata`` in the
    message (e.g. ``"reference"``); ``fix`` ends it (default: pass ``layer=None``).
    """
    if layer is not None and layer not in adata.layers:
        fix = f"pass layer=None to use {where}.X" if fix is None else fix
        msg = (
            f"layer={layer!r} not found in {where}.layers (available: "
            f"{list(adata.layers.keys())}); {fix}."
        )
        raise KeyError(msg)
    base = adata._adata_ref if adata.is_view else adata  # a view's X would be sliced
    # backed: X would reopen the file; look for its X element instead
    empty = _backed_file_lacks_x(base) if base.isbacked else base.X is None
    if layer is None and empty:
        msg = (
            f"{where}.X is empty (None): pass layer= naming the layer with the expression "
            f"(available: {list(adata.layers.keys())})."
        )
        raise ValueError(msg)


def _backed_file_lacks_x(adata: AnnData) -> bool:
    """Whether the file of a backed ``adata`` has no ``X`` (written with ``X=None``)."""
    files = adata.file
    if files.is_open:
        return "X" not in files
    import h5py

    try:
        with h5py.File(files.filename, "r") as f:
            return "X" not in f
    except OSError:  # moved, deleted, unreadable: the reader names it
        return False


def check_uns(adata: AnnData, section: str) -> None:
    """Raise a clear ``ValueError`` if ``adata.uns[section]`` exists and is not a dict.

    Functions record their parameters under ``uns[section][key_added]``; checked before any
    change to ``adata``.
    """
    value = adata.uns.get(section)
    if value is not None and not isinstance(value, Mapping):
        msg = (
            f"adata.uns[{section!r}] holds a {type(value).__name__}, where omicformer records "
            f"its parameters as a dict; rename it or delete it (del adata.uns[{section!r}])."
        )
        raise ValueError(msg)


def check_backed_writable(adata: AnnData, copy: bool, results: str, key: str | None = None) -> None:
    """``ValueError`` when the results cannot be written into a backed ``adata``.

    ``copy=True`` of a backed AnnData, or a view of one (anndata cannot add fields to either),
    or a ``key`` (``key_added``) holding ``"/"``, which the backing ``.h5ad`` file cannot hold
    (``check_file_key``). ``results`` names what would be written (``"obsm"``, ``"the
    predicted labels"``).
    """
    if copy and adata.isbacked:
        msg = "copy=True is not supported for backed AnnData; use copy=False."
        raise ValueError(msg)
    if adata.is_view and adata.isbacked:
        msg = (
            f"adata is a view of a backed AnnData, which cannot hold {results}; load the view "
            "first with adata.to_memory(), or subset the file and open it backed."
        )
        raise ValueError(msg)
    if adata.isbacked and key is not None:
        from ._checks import check_file_key

        check_file_key(key, where="a backed AnnData's .h5ad file")


def check_not_view(adata: AnnData, method: str) -> None:
    """``ValueError`` when ``adata`` is a view, which ``method`` cannot register.

    ``setup_anndata`` writes integer-code columns to ``obs``; scvi-tools asks for
    ``adata.copy()``, which a view of a backed AnnData refuses (it needs a filename), so the
    message names what works for each kind of view.
    """
    if not adata.is_view:
        return
    if adata.isbacked:
        msg = (
            f"{method} got a view of a backed AnnData (e.g. ad.read_h5ad(f, backed='r')[cells]), "
            "which cannot hold the columns it registers, nor be copied in place. Load the cells "
            "into memory, adata = backed[cells].to_memory(), or write them to a file, "
            "backed[cells].write_h5ad('subset.h5ad'), open that with backed='r' and set it up."
        )
        raise ValueError(msg)
    msg = (
        f"{method} got a view of an AnnData (e.g. adata[cells]), which cannot hold the columns "
        "it registers: pass a copy, adata = adata[cells].copy()."
    )
    raise ValueError(msg)


def check_csr(element: Any, key: str, filename: str) -> None:
    """``ValueError`` for a matrix stored column-major (CSC) in a file read by rows."""
    kind = element.attrs.get("encoding-type", element.attrs.get("h5sparse_format", ""))
    if (kind.decode() if isinstance(kind, bytes) else str(kind)) in ("csc_matrix", "csc"):
        msg = (
            f"{key!r} in {filename!r} is stored column-major (CSC): every chunk of rows would "
            "read the whole matrix. Store it as CSR, e.g. adata.X = "
            "scipy.sparse.csr_matrix(adata.X) before write_h5ad."
        )
        raise ValueError(msg)


def check_obs_key(adata: AnnData, key: str | None, argname: str) -> None:
    """Raise a clear ``KeyError`` if ``key`` is not a column of ``adata.obs``.

    A key that cannot name one column (a list, a dict) is a ``ValueError``.
    """
    if key is not None and not isinstance(key, str | int):
        msg = (
            f"{argname}={key!r} must name one column of adata.obs (a string), not a "
            f"{type(key).__name__}."
        )
        raise ValueError(msg)
    if key is not None and key not in adata.obs.columns:
        cols = list(adata.obs.columns)[:20]
        msg = f"{argname}={key!r} not found in adata.obs (columns: {cols})."
        raise KeyError(msg)


#: Label texts read as missing (what ``str`` makes of NaN, ``pd.NA`` and ``None``).
MISSING_TEXTS = ("nan", "<NA>", "None")


def missing_texts(values: pd.Series, known: Any = ()) -> np.ndarray:
    """Which of ``values`` are empty or the texts of missing values (:data:`MISSING_TEXTS`).

    Not NaN itself, nor a value in ``known`` (a saved model's categories: a model saved before
    these texts were read as missing may have ``"None"`` as a class).
    """
    texts = values.astype(str).str.strip()
    blank = values.notna() & ((texts == "") | texts.isin(MISSING_TEXTS))
    return blank.to_numpy() & ~values.isin(list(known)).to_numpy()


def warn_batch_texts(batches: pd.Series, key: str, effect: str) -> None:
    """Warn of cells whose batch in ``obs[key]`` is empty or the text of a missing value.

    ``obs[key].astype(str)`` writes a NaN batch as ``"nan"``; such cells stay one batch of their
    own (a batch may be named so), which ``effect`` tells (e.g. "integrated as one batch").
    """
    as_text = missing_texts(batches)
    if as_text.any():
        from ._warnings import warn_user

        found = " / ".join(map(repr, sorted(set(batches.astype(str)[as_text]))))
        warn_user(
            f"adata.obs[{key!r}]: {int(as_text.sum())} cells are in the batch {found}, empty "
            f"or the text of a missing value (as .astype(str) writes it); they are {effect}. "
            "Fill in their batches if they have others."
        )


def labelled_cells(
    values: pd.Series, where: str, *, no_label_hint: str = "", rare_hint: str = ""
) -> tuple[np.ndarray, pd.Series]:
    """Which cells have a label (not missing, not blank) and the cells per label.

    The texts that converting a missing value to ``str`` writes (``"nan"``, ``"<NA>"``,
    ``"None"``: ``obs[key].astype(str)`` before writing a file) are missing too, with a
    warning saying how many cells hold them. Raises ``ValueError`` naming ``where`` when no cell
    has a label or a label has fewer than 2 cells (those are named); the hints end the messages.
    """
    from ._warnings import warn_user

    text = values.astype(str).str.strip()
    as_text = text.isin(MISSING_TEXTS).to_numpy() & values.notna().to_numpy()
    if as_text.any():
        found = sorted(set(text[as_text]))
        warn_user(
            f"{where}: {int(as_text.sum())} cells have the label {' / '.join(map(repr, found))}, "
            "the text of a missing value (as .astype(str) writes it); they are read as missing "
            "(unlabelled). Rename that label if it is a real cell type."
        )
    has_label = values.notna().to_numpy() & (text != "").to_numpy() & ~as_text
    if not has_label.any():
        msg = f"{where} has no labels (all missing){'; ' + no_label_hint if no_label_hint else ''}."
        raise ValueError(msg)
    counts = values[has_label].astype(str).value_counts()
    _warn_space_variants(counts.index, where)
    rare = sorted(counts.index[counts < 2])
    if rare:
        msg = (
            f"{where} has labels with fewer than 2 cells: {rare[:10]}; remove or merge them"
            f"{' (' + rare_hint + ')' if rare_hint else ''}."
        )
        raise ValueError(msg)
    return has_label, counts


def _warn_space_variants(labels: pd.Index, where: str) -> None:
    """Warn when labels differ only by spaces at their ends (``"B cell"``, ``"B cell "``).

    They stay separate classes, as scanpy keeps them; the warning names them.
    """
    from ._warnings import warn_user

    stripped = labels.str.strip()
    doubled = stripped[stripped.duplicated(keep=False)]
    if len(doubled):
        variants = sorted(labels[stripped.isin(doubled)], key=lambda t: (t.strip(), t))
        warn_user(
            f"{where} has labels differing only by spaces at their ends: "
            f"{variants[:10]}; they are read as separate cell types. Strip them first, e.g. "
            "adata.obs[key] = adata.obs[key].str.strip(), if they are the same."
        )


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]`` (a backed dataset stays lazy)."""
    check_layer(adata, layer)
    return adata.X if layer is None else adata.layers[layer]


def iter_row_chunks(
    adata: AnnData, layer: str | None = None, chunk_size: int = 1024
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield ``(row_indices, csr_chunk)`` over cells, reading at most ``chunk_size`` rows at a time.

    Works for in-memory and ``backed="r"`` AnnData, and views of them (:class:`RowReader`):
    only one chunk is ever materialised.
    """
    reader = RowReader(adata, layer)
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        yield np.arange(start, stop), reader.read(start, stop)


#: What :func:`check_values` advises for negative values, unless told otherwise.
COUNTS_HINT = (
    "scGPT expects raw counts or non-negative normalised expression, not scaled data. Pass "
    "layer='counts' (or the layer holding counts) or use adata.raw.to_adata()."
)


def check_values(chunk: sp.csr_matrix, where: str, first_row: int, hint: str = COUNTS_HINT) -> None:
    """Raise ``ValueError`` for NaN/inf or negative values in a chunk of expression rows.

    ``hint`` ends the message for negative values (what the caller's function expects).
    """
    data = chunk.data
    if data.size and not np.all(np.isfinite(data)):
        msg = (
            f"{where} contains NaN or infinite values (rows from {first_row}); remove or impute "
            "them before running omicformer."
        )
        raise ValueError(msg)
    if data.size and data.min() < 0:
        msg = f"{where} contains negative values (min {data.min():.3g}); {hint}"
        raise ValueError(msg)


def _min_value(matrix) -> float:
    """Smallest value of an in-memory dense or sparse matrix (0.0 when empty).

    Of a sparse one, the smallest stored value once duplicate entries are summed.
    """
    if sp.issparse(matrix) and not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    return float(data.min()) if data.size else 0.0


def raw_if_scaled(adata: AnnData, layer: str | None, gene_key: str | None, where: str) -> AnnData:
    """``adata``, or its ``.raw`` expression when ``adata.X`` holds scaled values.

    scanpy's workflow scales ``X`` after keeping the log-normalised matrix in ``adata.raw``
    (``adata.raw = adata``; ``sc.pp.scale``); scGPT bins non-negative expression. When no
    ``layer`` is asked for, ``X`` (in memory) has negative values and ``adata.raw`` exists
    without any (and holds ``gene_key`` if one is given), a warning says so and an AnnData of
    ``adata.raw``'s matrix and genes with ``adata``'s ``obs`` is returned for reading; results
    are still written to ``adata``. Otherwise ``adata`` itself is returned (and the values
    check raises its error if ``X`` is unusable). The warning points at the user's line.
    """
    if layer is not None or adata.isbacked or adata.raw is None or adata.n_obs == 0:
        return adata
    if hasattr(adata.X, "compute"):  # a dask X is read chunk by chunk, never whole
        return adata
    raw = adata.raw
    if gene_key is not None and gene_key not in raw.var.columns:
        return adata
    low = _min_value(adata.X)
    # NaN (not < 0) is no sign of scaling: X is read, and the values check names the NaN
    if not low < 0 or _min_value(raw.X) < 0:
        return adata
    import anndata as ad

    from ._warnings import warn_caller

    warn_caller(
        f"{where}.X holds negative values (min {low:.3g}: scaled data), so {where}.raw "
        f"({raw.n_vars} genes) is read instead, as scanpy does with use_raw. Pass layer= to "
        "read another matrix."
    )
    return ad.AnnData(X=raw.X, obs=adata.obs.copy(), var=raw.var.copy())


def to_csr(block) -> sp.csr_matrix:
    """Convert a dense/sparse/backed/dask block to float32 CSR in canonical form.

    Canonical: sorted column indices and no duplicate entries. scipy sums a sparse
    matrix's duplicate ``(row, column)`` entries; every reader here walks the stored entries,
    so duplicates are summed first (on a copy: the caller's arrays are never changed).
    """
    if hasattr(block, "to_memory"):
        block = block.to_memory()
    if hasattr(block, "compute"):  # a dask array (anndata's lazy X): this block only
        block = block.compute()
    if sp.issparse(block):
        csr = sp.csr_matrix(block, dtype=np.float32)
    else:
        csr = sp.csr_matrix(np.asarray(block, dtype=np.float32))
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


#: Rows of a backed view at most this far apart are read in one contiguous slice.
MAX_GAP = 16


class RowReader:
    """Read rows ``start:stop`` of ``adata.X`` (or a layer), only those rows.

    For an AnnData that is not a view this is ``matrix[start:stop]``; a backed matrix is
    opened without caching its whole ``indptr`` (an array as long as the file). For a view
    (``adata[mask]``, backed or not), the rows of the view that are asked for are read from
    the AnnData it is a view of, then its columns selected: anndata's ``view.X`` would
    materialise the whole view on every access.

    Parameters
    ----------
    adata
        In memory or ``backed="r"``, a view or not.
    layer
        ``None`` for ``adata.X``, else a key of ``adata.layers``.
    """

    def __init__(self, adata: AnnData, layer: str | None = None) -> None:
        check_layer(adata, layer)
        self.n_obs = int(adata.n_obs)
        ref = getattr(adata, "_adata_ref", None) if adata.is_view else None
        base = adata if ref is None else ref
        self.backed = bool(base.isbacked) and layer is None  # layers are read into memory
        self.matrix = _backed_matrix(base) if self.backed else get_matrix(base, layer)
        self.rows: range | np.ndarray | None = None
        self.cols: Any = None
        if ref is not None:
            self.rows = positions(adata._oidx, base.n_obs)
            if not _is_everything(adata._vidx, base.n_vars):
                self.cols = adata._vidx

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` (of ``adata``) as float32 CSR."""
        if self.rows is None:
            return to_csr(self.matrix[start:stop])
        rows = self.rows[start:stop]
        if isinstance(rows, range) and rows.step == 1:
            X = to_csr(self.matrix[rows.start : rows.stop])
        else:
            X = self._take(np.asarray(rows, dtype=np.int64))
        return X if self.cols is None else X[:, self.cols]

    def _take(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` of the matrix, in that order; on disk in runs of nearby rows."""
        if not self.backed:
            return to_csr(self.matrix[rows])
        wanted, where = np.unique(rows, return_inverse=True)
        cuts = np.flatnonzero(np.diff(wanted) > MAX_GAP) + 1
        parts = []
        for run in np.split(wanted, cuts):
            lo, hi = int(run[0]), int(run[-1]) + 1
            block = to_csr(self.matrix[lo:hi])
            parts.append(block if hi - lo == len(run) else block[run - lo])
        X = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
        if len(wanted) == len(rows) and np.array_equal(wanted, rows):
            return X
        return X[where.ravel()]


def sparse_element(group: Any) -> Any:
    """An on-disk sparse matrix group as anndata's sparse dataset, ``indptr`` read per slice.

    anndata before 0.12 has no ``should_cache_indptr`` and reads the whole ``indptr`` (8 bytes a
    row) once; the dataset works the same otherwise.
    """
    from anndata.io import sparse_dataset

    try:
        return sparse_dataset(group, should_cache_indptr=False)
    except TypeError:  # anndata < 0.12
        return sparse_dataset(group)


def _backed_matrix(adata: AnnData) -> Any:
    """The ``X`` element of a backed AnnData's file: a sparse dataset or an HDF5 dataset."""
    if not adata.file.is_open:
        adata.file.open()
    element = adata.file["X"]
    check_csr(element, "X", str(adata.filename))
    if hasattr(element, "keys"):  # a group: sparse, read ``indptr`` per slice, never whole
        return sparse_element(element)
    return element


def positions(index: Any, n: int) -> range | np.ndarray:
    """Positions selected by an anndata view index (slice, integer, mask, integers)."""
    if isinstance(index, slice):
        return range(n)[index]
    if isinstance(index, int | np.integer):
        i = int(index) % n
        return range(i, i + 1)
    index = np.asarray(index)
    if index.dtype == bool:
        return np.flatnonzero(index)
    index = index.astype(np.int64)
    return np.where(index < 0, index + n, index)


def _is_everything(index: Any, n: int) -> bool:
    """Whether a view index selects all ``n`` positions in order."""
    return isinstance(index, slice) and range(n)[index] == range(n)
