"""Many ``.h5ad`` files as one: on-disk concatenation with genes aligned by symbol."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._core._checks import check_int
from .._core._warnings import warn_caller
from ._collection_dense import _dense_elements, _linked_view, _write_dense
from ._collection_input import _check_layout, _check_paths, _read_genes

logger = logging.getLogger("omicformer")

__all__ = ["concat_h5ad"]

#: ``uns`` key of the report written by :func:`concat_h5ad`.
REPORT_KEY = "concat_h5ad"


def concat_h5ad(
    paths: Sequence[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    join: Literal["inner", "outer"] = "inner",
    gene_key: str | None = None,
    label: str | None = None,
    index_unique: str | None = None,
    overwrite: bool = False,
    max_loaded_elems: int = 100_000_000,
) -> None:
    """Concatenate ``.h5ad`` files cell-wise into one file, without loading them into memory.

    Genes are aligned by symbol (``var_names``, or the ``var[gene_key]`` column), so files of
    different studies can be combined; the result is one file to open with
    ``anndata.read_h5ad(out_path, backed="r")`` and use for :func:`omicformer.scgpt.tl.embed`
    or :meth:`~omicformer.scgpt.model.ScGPT.train`, which stream backed data in chunks. The
    copying is :func:`anndata.experimental.concat_on_disk` (dense ``X``, layers and ``obsm``
    arrays are copied by omicformer in blocks of rows, without dask), which holds at most
    ``max_loaded_elems`` matrix entries in memory. The file is written under a temporary name
    in the same folder and renamed when complete, so ``out_path`` never holds a partial file.
    Layers and ``obsm`` arrays are kept where every file holds them (a warning names the
    others); repeated ``var_names`` are made unique (``A``, ``A-1``), as symbols read through
    ``gene_key`` are. A matrix's values are written with the first file's type: a later file
    whose values that type cannot hold (float64 after float32, int64 after int32, floats after
    integers) is refused, naming the type to put first.

    Parameters
    ----------
    paths
        The input ``.h5ad`` files, in order; a mapping ``{name: path}`` names each file (for
        ``label`` and ``index_unique``; default names ``"0"``, ``"1"``, ...).
    out_path
        The ``.h5ad`` file to write.
    join
        ``"inner"``: keep the genes of every file; ``"outer"``: the union of genes, a cell
        getting zeros for the genes its file lacks. scGPT reads only the expressed genes of a
        cell, so ``"outer"`` keeps every cell's measurements as they are, whereas ``"inner"``
        drops the genes not shared.
    gene_key
        ``var`` column with gene symbols in every file (e.g. ``"feature_name"`` in CELLxGENE
        files, whose ``var_names`` are Ensembl IDs); ``None`` uses ``var_names``. The output's
        ``var_names`` are the symbols. A symbol repeated within a file is made unique as
        :meth:`anndata.AnnData.var_names_make_unique` does (``"TBCE"``, ``"TBCE-1"``).
    label
        ``obs`` column to record each cell's file name in (``None``: none). It must not be a
        column of any file already (the cells' own values would be replaced).
    index_unique
        Separator to make cell names unique by appending the file name (``None``: keep them).
    overwrite
        Replace an existing ``out_path``.
    max_loaded_elems
        Matrix entries held in memory at once while copying matrices (an integer >= 1).

    Returns
    -------
    ``None``; writes ``out_path`` with the concatenated cells (``obs`` columns and ``var``
    columns equal across files are kept) and ``uns["concat_h5ad"]``: ``files``, ``n_cells``
    (per file), ``n_genes`` (per file), ``n_genes_union``, ``n_genes_intersection``,
    ``n_genes_out``, ``join`` and ``gene_key``. Genes that differ across files are also
    reported in a warning.

    Raises
    ------
    FileNotFoundError
        An input file, or the folder of ``out_path``, does not exist.
    FileExistsError
        ``out_path`` exists and ``overwrite=False``.
    ValueError
        The files share no gene (examples of each file's genes are named), a bad ``join`` or
        ``max_loaded_elems``, ``out_path`` is also an input, an input is not an HDF5 file,
        ``label`` is already an ``obs`` column of some file, or the files' ``X`` (or a layer
        they share) are not all CSR or all dense (a CSC matrix, or dense in some files and
        sparse in others): the files and their kinds are named; or a CSR matrix holds
        integers in the first file and floats in another (written on disk with the first
        file's type, the floats would be truncated; floats first is fine).
    KeyError
        ``gene_key`` is not a ``var`` column of some file, or a file has no ``X``
        (``obs``, ``var``).

    Examples
    --------
    >>> from omicformer import scgpt
    >>> scgpt.pp.concat_h5ad(
    ...     {"lung": "lung.h5ad", "blood": "blood.h5ad"},
    ...     "atlas.h5ad",
    ...     join="outer",
    ...     label="dataset",
    ... )
    >>> atlas = anndata.read_h5ad("atlas.h5ad", backed="r")
    >>> scgpt.tl.embed(atlas, model="default")
    """
    check_int("max_loaded_elems", max_loaded_elems)
    names, files, out = _check_paths(paths, out_path, join=join, overwrite=overwrite)
    genes, n_cells = zip(*(_read_genes(f, gene_key) for f in files), strict=True)
    _check_layout(names, files, label)
    report = _gene_report(names, files, genes, n_cells, join=join, gene_key=gene_key)

    from anndata.io import write_elem

    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp.h5ad")
    try:
        if len(files) == 1:  # concat_on_disk would copy it as it is (links to it, with gene_key)
            _copy_one(files[0], tmp, names[0], genes[0], gene_key, label, index_unique)
        else:
            _concat_files(names, files, genes, tmp, join=join, gene_key=gene_key, label=label,
                          index_unique=index_unique, max_loaded_elems=max_loaded_elems)  # fmt: skip
        import h5py

        with h5py.File(tmp, "a") as f:
            if "uns" not in f:
                write_elem(f, "uns", {})
            write_elem(f["uns"], REPORT_KEY, report)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _copy_one(
    src: Path,
    tmp: Path,
    name: str,
    symbols: np.ndarray,
    gene_key: str | None,
    label: str | None,
    index_unique: str | None,
) -> None:
    """One input file written to ``tmp`` as :func:`concat_h5ad` writes several.

    A copy of the file; then its ``obs`` gets the ``label`` column and the ``index_unique``
    suffix, and with ``gene_key`` its ``var`` the symbols as names, as ``concat_on_disk``
    gives them to each of several files.
    """
    import shutil

    import h5py
    from anndata.io import read_elem, write_elem

    shutil.copyfile(src, tmp)
    with h5py.File(tmp, "a") as f:
        if label is not None or index_unique is not None:
            obs = read_elem(f["obs"])
            if index_unique is not None:
                obs.index = obs.index.astype(str) + index_unique + name
            if label is not None:
                obs[label] = pd.Categorical([name] * len(obs), categories=[name])
            write_elem(f, "obs", obs)
        if gene_key is not None or _names_repeat(src):
            write_elem(f, "var", _view_var(src, symbols, gene_key))


def _concat_files(
    names: list[str],
    files: list[Path],
    genes: tuple[np.ndarray, ...],
    tmp: Path,
    *,
    join: str,
    gene_key: str | None,
    label: str | None,
    index_unique: str | None,
    max_loaded_elems: int,
) -> None:
    """Several input files concatenated to ``tmp`` with ``concat_on_disk``."""
    import anndata as ad
    from anndata.experimental import concat_on_disk
    from anndata.io import read_elem, write_elem

    dense = _dense_elements(files)
    with tempfile.TemporaryDirectory() as links, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*not unique.*")  # reported by the user's read
        inputs, var, keeps_var = files, None, _concat_on_disk_keeps_var()
        vars_: list[pd.DataFrame | None] = [None] * len(files)
        repeats = gene_key is None and any(_names_repeat(f) for f in files)
        if gene_key is not None or not keeps_var or repeats:
            vars_ = [_view_var(f, g, gene_key) for f, g in zip(files, genes, strict=True)]
            if not keeps_var:
                # anndata < 0.12 writes an empty `var` over the merged one, or fails when
                # the files' `var` columns agree: it gets no columns, and the merge of
                # in-memory concat (the same as 0.12's concat_on_disk) is written after it
                warnings.filterwarnings("ignore", "Transforming to str index")  # no cells
                var = ad.concat([ad.AnnData(var=v) for v in vars_], join=join, merge="same").var
                vars_ = [v.iloc[:, :0] for v in vars_]
        if gene_key is not None or not keeps_var or dense or repeats:
            # dense matrices are left out (X: an empty CSR of its shape) and written below:
            # concat_on_disk copies them with dask, which omicformer does not depend on
            inputs = [
                _linked_view(f, v, Path(links) / f"{i}.h5ad", dense)
                for i, (f, v) in enumerate(zip(files, vars_, strict=True))
            ]
        concat_on_disk(
            dict(zip(names, inputs, strict=True)), tmp, join=join, merge="same",
            label=label, index_unique=index_unique, max_loaded_elems=max_loaded_elems,
        )  # fmt: skip
    if var is not None:  # in the genes' order concat_on_disk wrote the matrix in
        import h5py

        with h5py.File(tmp, "a") as f:
            written = read_elem(f["var"]).index
            if not written.equals(var.index):
                var = var.iloc[var.index.get_indexer(written)]
            write_elem(f, "var", var)
    if dense:
        _write_dense(files, genes, tmp, dense, max_loaded_elems)


def _gene_report(
    names: list[str],
    files: list[Path],
    genes: Sequence[np.ndarray],
    n_cells: Sequence[int],
    *,
    join: str,
    gene_key: str | None,
) -> dict[str, Any]:
    """Union/intersection of the files' genes: an error if they share none, a warning if they differ."""
    union = pd.Index(np.concatenate(genes)).unique()
    shared = pd.Index(genes[0])
    for g in genes[1:]:
        shared = shared.intersection(pd.Index(g), sort=False)
    label = [f"{n!r} ({f.name})" for n, f in zip(names, files, strict=True)]
    if len(shared) == 0:
        examples = "; ".join(f"{lab}: {list(g[:3])}" for lab, g in zip(label, genes, strict=True))
        msg = (
            f"The {len(files)} files share no gene (by {'var_names' if gene_key is None else f'var[{gene_key!r}]'}); "
            f"their genes look like {examples}. If some files use Ensembl IDs and others symbols, "
            "pass gene_key= naming a var column with symbols in every file."
        )
        raise ValueError(msg)
    n_out = len(shared) if join == "inner" else len(union)
    if len(shared) < len(union):
        lacking = [
            f"{lab} lacks {len(miss)} (e.g. {list(miss[:3])})"
            for lab, g in zip(label, genes, strict=True)
            if len(miss := union.difference(pd.Index(g), sort=False))
        ]
        effect = (
            f"join='inner' keeps the {len(shared)} shared genes"
            if join == "inner"
            else f"join='outer' keeps all {len(union)}, with zeros where a file lacks a gene"
        )
        warn_caller(
            f"The files have different genes: {len(shared)} shared, {len(union)} in all; "
            f"{effect}. {'; '.join(lacking)}."
        )
    logger.info("concat_h5ad: %d files, %d cells, %d genes (union %d, shared %d)",
                len(files), sum(n_cells), n_out, len(union), len(shared))  # fmt: skip
    return {
        "files": np.asarray([os.fspath(f) for f in files], dtype=object),
        "names": np.asarray(names, dtype=object),
        "n_cells": np.asarray(n_cells, dtype=np.int64),
        "n_genes": np.asarray([len(g) for g in genes], dtype=np.int64),
        "n_genes_union": len(union),
        "n_genes_intersection": len(shared),
        "n_genes_out": n_out,
        "join": join,
        "gene_key": "" if gene_key is None else gene_key,
    }


def _concat_on_disk_keeps_var() -> bool:
    """Whether anndata's ``concat_on_disk`` writes the merged ``var`` (0.12 on, scverse/anndata#1854)."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("anndata")) >= Version("0.12")


def _view_var(src: Path, symbols: np.ndarray, gene_key: str | None) -> pd.DataFrame:
    """The ``var`` of ``src``; with ``gene_key``, indexed by ``symbols``, also its ``gene_key`` column."""
    from anndata.io import read_elem

    from .._core._ondisk import open_h5

    with open_h5(src) as f:
        var = read_elem(f["var"])
    if gene_key is not None:
        var.index = pd.Index(symbols, dtype=object, name=None)
        var[gene_key] = np.asarray(symbols, dtype=object)
    elif not var.index.is_unique:  # repeated var_names, made unique as with gene_key
        var.index = pd.Index(symbols, dtype=object, name=None)
    return var


def _names_repeat(src: Path) -> bool:
    """Whether the ``var_names`` of ``src`` repeat (pandas cannot align such genes)."""
    from anndata.io import read_elem

    from .._core._ondisk import open_h5

    with open_h5(src) as f:
        return not read_elem(f["var"]).index.is_unique
