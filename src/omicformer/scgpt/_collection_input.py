"""Checks and reads of the input files of :func:`~omicformer.scgpt.pp.concat_h5ad`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._genes import symbols_or_names


def _check_paths(
    paths: Sequence[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    join: str,
    overwrite: bool,
) -> tuple[list[str], list[Path], Path]:
    """File names, absolute input paths and output path; errors before anything is written."""
    if join not in ("inner", "outer"):
        msg = f"join={join!r} must be 'inner' or 'outer'."
        raise ValueError(msg)
    if isinstance(paths, str | os.PathLike):
        msg = "paths must be a list (or mapping) of .h5ad files, not a single path."
        raise TypeError(msg)
    if isinstance(paths, Mapping):
        names, files = [str(k) for k in paths], [Path(p) for p in paths.values()]
    else:
        files = [Path(p) for p in paths]
        names = [str(i) for i in range(len(files))]
    if not files:
        msg = "paths is empty: give at least one .h5ad file."
        raise ValueError(msg)
    out = Path(out_path)
    for p in [*files, out]:
        if p.suffix != ".h5ad":
            msg = f"{os.fspath(p)!r} is not an .h5ad file name."
            raise ValueError(msg)
    for p in files:
        if not p.is_file():
            msg = f"Input file {os.fspath(p)!r} does not exist."
            raise FileNotFoundError(msg)
    if not out.parent.is_dir():
        msg = f"The folder of out_path {os.fspath(out)!r} does not exist."
        raise FileNotFoundError(msg)
    files = [p.resolve() for p in files]
    if out.exists():
        if out.resolve() in files:
            msg = f"out_path {os.fspath(out)!r} is also an input; write to a new file."
            raise ValueError(msg)
        if not overwrite:
            msg = f"{os.fspath(out)!r} exists; pass overwrite=True to replace it."
            raise FileExistsError(msg)
    return names, files, out


def _read_genes(path: Path, gene_key: str | None) -> tuple[np.ndarray, int]:
    """Gene symbols (made unique) and number of cells of one file, reading only ``var``."""
    from anndata.io import read_elem

    with _open_input(path) as f:
        var = read_elem(f["var"])
        X = f["X"]
        n_cells = int(_stored_shape(X)[0])
    if gene_key is None:
        symbols = var.index.astype(str)
    elif gene_key not in var.columns:
        msg = (
            f"gene_key={gene_key!r} is not a var column of {os.fspath(path)!r} "
            f"(columns: {list(var.columns)[:20]})."
        )
        raise KeyError(msg)
    else:
        symbols = pd.Index(symbols_or_names(var[gene_key], var.index))
    return _make_unique(np.asarray(symbols, dtype=object)), n_cells


def _open_input(path: Path) -> Any:
    """An input file opened read-only: an error naming it if it is not an ``.h5ad`` file."""
    import h5py

    from .._core._ondisk import open_h5

    if not h5py.is_hdf5(path):
        msg = (
            f"Input file {os.fspath(path)!r} is not an HDF5 (.h5ad) file; it may be another "
            "format with an .h5ad name (zarr, loom, csv) or damaged. Read it with the reader of "
            "its format and write it with AnnData.write_h5ad."
        )
        raise ValueError(msg)
    try:
        f = open_h5(path)
    except OSError as err:
        if os.fspath(path) in str(err):
            raise
        msg = f"Cannot read input file {os.fspath(path)!r} (damaged or incomplete?): {err}"
        raise OSError(msg) from err
    missing = [k for k in ("X", "obs", "var") if k not in f]
    if missing:
        f.close()
        hint = (
            "concat_h5ad concatenates X: set adata.X (e.g. adata.X = adata.layers['counts']) "
            "and write the file again."
            if missing == ["X"]
            else "Is it an AnnData file? A 10x .h5 is read with scanpy.read_10x_h5."
        )
        msg = f"Input file {os.fspath(path)!r} has no {', '.join(missing)}. {hint}"
        raise KeyError(msg)
    return f


def _stored_shape(elem: Any) -> tuple[int, ...]:
    """Shape of an ``.h5ad`` matrix element.

    A dense dataset's own, or a sparse group's attribute (``shape``; ``h5sparse_shape`` in
    files written before anndata 0.7).
    """
    for name in ("shape", "h5sparse_shape"):
        if name in elem.attrs:
            return tuple(int(n) for n in elem.attrs[name])
    return tuple(elem.shape)


def _matrix_kind(elem: Any) -> str:
    """``"csr"``, ``"csc"``, ``"dense"`` or ``"other"``: the kind of an ``.h5ad`` matrix element."""
    import h5py

    if isinstance(elem, h5py.Dataset):
        return "dense"
    enc = elem.attrs.get("encoding-type", elem.attrs.get("h5sparse_format", ""))
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    return {"csr_matrix": "csr", "csr": "csr", "csc_matrix": "csc", "csc": "csc"}.get(enc, "other")


def _check_layout(names: list[str], files: list[Path], label: str | None) -> None:
    """Errors, before anything is written, for what ``concat_on_disk`` cannot concatenate.

    ``label`` must not replace an ``obs`` column of the files. ``X`` and every layer the
    files share must be CSR in every file or dense in every file: ``concat_on_disk`` copies
    CSR matrices in chunks (dense ones are written by :func:`_write_dense`), and refuses CSC
    and mixes of kinds.
    """
    import h5py

    kinds, dtypes, clash, held = [], [], [], []
    for f in files:
        with _open_input(f) as h5:
            if "h5sparse_format" in h5["X"].attrs and "encoding-type" not in h5["X"].attrs:
                msg = (
                    f"{os.fspath(f)!r} was written by anndata before 0.7 (sparse X without an "
                    "encoding-type), which concatenation on disk cannot read. Write it again "
                    "with today's anndata: anndata.read_h5ad(path).write_h5ad(path)."
                )
                raise ValueError(msg)
            layers = h5.get("layers")
            layers = layers if isinstance(layers, h5py.Group) else {}
            kinds.append(
                {"X": _matrix_kind(h5["X"])}
                | {f"layers[{k!r}]": _matrix_kind(layers[k]) for k in layers}
            )
            dtypes.append(
                {"X": _csr_dtype(h5["X"])}
                | {f"layers[{k!r}]": _csr_dtype(layers[k]) for k in layers}
            )
            obsm = h5.get("obsm")
            obsm = obsm if isinstance(obsm, h5py.Group) else {}
            held.append({f"layers[{k!r}]" for k in layers} | {f"obsm[{k!r}]" for k in obsm})
            obs = h5["obs"]
            if isinstance(obs, h5py.Dataset):  # anndata < 0.7: a structured array
                columns = obs.dtype.names or ()
            else:
                columns = obs.attrs.get("column-order", ())
            if label is not None and label in [str(c) for c in columns]:
                clash.append(os.fspath(f))
    if clash:
        msg = (
            f"label={label!r} is already an obs column of {clash}; concat_h5ad would replace the "
            f"cells' own values with file names. Pass another label, e.g. label='{label}_file'."
        )
        raise ValueError(msg)
    if len(files) == 1:
        return  # concat_on_disk copies a single file as it is
    partial = sorted(set.union(*held) - set.intersection(*held))
    if partial:  # concat_on_disk keeps only the layers and obsm keys of every file
        from .._core._warnings import warn_caller

        counts = {e: sum(e in h for h in held) for e in partial}
        listing = ", ".join(f"{e} ({n} of {len(files)} files)" for e, n in counts.items())
        warn_caller(
            f"{listing}: not in every file, so not in the concatenation (concatenation on disk "
            "keeps the layers and obsm arrays all files hold). Add them to the other files to "
            "keep them."
        )
    for elem in kinds[0]:
        of = [k.get(elem) for k in kinds]
        if None in of or "other" in of:
            continue  # a layer not in every file is dropped; "other": anndata's own error
        if of.count("csr") == len(of) or of.count("dense") == len(of):
            continue
        listing = _per_file(names, files, of)
        msg = (
            f"{elem} must be CSR sparse in every file or dense in every file to be "
            f"concatenated on disk, not: {listing}. Convert it to CSR and write those files "
            f"again: adata = anndata.read_h5ad(path); adata.{elem} = "
            f"scipy.sparse.csr_matrix(adata.{elem}); adata.write_h5ad(path)."
        )
        raise ValueError(msg)
    _check_csr_dtypes(names, files, dtypes)


def _per_file(names: list[str], files: list[Path], values: list) -> str:
    """``"'a' (a.h5ad): csr; 'b' (b.h5ad): dense"``: a value per file, for messages."""
    return "; ".join(f"{n!r} ({f.name}): {v}" for n, f, v in zip(names, files, values, strict=True))


def _csr_dtype(elem: Any) -> np.dtype | None:
    """The value type of a CSR matrix element (``None`` for other kinds)."""
    return np.dtype(elem["data"].dtype) if _matrix_kind(elem) == "csr" else None


def _check_csr_dtypes(names: list[str], files: list[Path], dtypes: list[dict]) -> None:
    """``ValueError`` where a CSR matrix would lose its values to the first file's type.

    ``concat_on_disk`` writes every file's values with the type of the first file's, silently:
    integer counts first and floats (log-normalised values) after were truncated to integers,
    float64 after float32 rounded (1e300 became inf), int64 after int32 cut. Types the first
    file's holds (``numpy.can_cast(..., casting="safe")``) pass, and integers after floats
    (counts, exact in float32 up to 2**24).
    """

    def fits(dtype: Any, first: Any) -> bool:
        dtype, first = np.dtype(dtype), np.dtype(first)
        return np.can_cast(dtype, first, casting="safe") or (
            dtype.kind in "iub" and first.kind == "f"
        )

    for elem, first in dtypes[0].items():
        of = [d.get(elem) for d in dtypes]
        if any(d is None for d in of):  # not "None in of": numpy's dtype("f8") == None is True
            continue
        if all(fits(d, first) for d in of):
            continue
        listing = _per_file(names, files, of)
        floats = [np.dtype(d) for d in of if np.dtype(d).kind == "f"]  # integers fit after them
        widest = max(floats, key=lambda d: d.itemsize) if floats else np.result_type(*of)
        msg = (
            f"{elem} holds {first} values in the first file and values {first} cannot hold in "
            f"others ({listing}); concatenated on disk, every file's values would be cast to "
            f"the first file's {first} (floats truncated to integers, wider numbers rounded or "
            f"cut). Put a file with {widest} values first, or write them all with one type: "
            f"adata.{elem} = adata.{elem}.astype('{widest}'); adata.write_h5ad(path)."
        )
        raise ValueError(msg)


def _make_unique(names: np.ndarray) -> np.ndarray:
    """``anndata``'s ``var_names_make_unique``: repeats become ``name-1``, ``name-2``, ..."""
    if pd.Index(names).is_unique:
        return names
    out, seen = names.copy(), set(names)
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in counts:
            k = counts[name]
            while f"{name}-{k}" in seen:
                k += 1
            out[i] = f"{name}-{k}"
            seen.add(out[i])
            counts[name] = k + 1
        else:
            counts[name] = 1
    return out
