"""Dense matrices of :func:`~omicformer.scgpt.pp.concat_h5ad`, copied in blocks of rows.

``concat_on_disk`` would copy dense ``X``, layers and ``obsm`` arrays with dask, which
omicformer does not depend on: they are left out of the linked views of the inputs it reads
(:func:`_linked_view`, which also gives them another ``var``) and written into its output by
:func:`_write_dense`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._core._warnings import warn_caller

#: Elements of a file ``_write_dense`` concatenates: ``(group, key)``, ``group`` "" for ``X``.
DenseElement = tuple[str, str]


def _dense_elements(files: list[Path]) -> list[DenseElement]:
    """``X``, the layers and the ``obsm`` arrays that are dense in every file (and kept).

    ``X`` and layers are dense in every file or in none (:func:`_check_layout`); a layer or
    ``obsm`` key not in every file is dropped by the concatenation, as anndata drops it.
    """
    import h5py

    from ._collection_input import _open_input

    found: list[set[DenseElement]] = []
    for f in files:
        with _open_input(f) as h5:
            mine = {("", "X")} if isinstance(h5["X"], h5py.Dataset) else set()
            for group in ("layers", "obsm"):
                elems = h5.get(group)
                if isinstance(elems, h5py.Group):
                    mine |= {(group, k) for k in elems if isinstance(elems[k], h5py.Dataset)}
            found.append(mine)
    return sorted(set.intersection(*found))


def _write_dense(
    files: list[Path],
    genes: tuple[np.ndarray, ...],
    tmp: Path,
    dense: list[DenseElement],
    max_loaded_elems: int,
) -> None:
    """Concatenate the ``dense`` elements of ``files`` into ``tmp``, in blocks of rows.

    ``X`` and layers are aligned to the genes ``concat_on_disk`` wrote (``var``), zeros for
    the genes a file lacks (``join="outer"``), as for sparse matrices; ``obsm`` arrays are
    stacked (an array whose shape differs across files is dropped with a warning). At most
    ``max_loaded_elems`` values of an input are held in memory at once.
    """
    import h5py
    from anndata.io import read_elem

    from .._core._obsm_out import ARRAY_ENCODING
    from .._core._ondisk import open_h5

    with h5py.File(tmp, "a") as out:
        out_genes = pd.Index(read_elem(out["var"]).index)
        for group, key in dense:
            path = f"{group}/{key}" if group else key
            sources = [open_h5(f) for f in files]
            try:
                arrays = [h5[path] for h5 in sources]
                if group == "obsm":
                    trailing = {a.shape[1:] for a in arrays}
                    if len(trailing) > 1:
                        warn_caller(
                            f"obsm[{key!r}] has other shapes in different files "
                            f"({sorted(trailing)}); it is left out of the concatenation."
                        )
                        continue
                    columns = [None] * len(arrays)
                    width = arrays[0].shape[1:]
                else:
                    columns = [pd.Index(g).get_indexer(out_genes) for g in genes]
                    width = (len(out_genes),)
                dtype = np.result_type(*(a.dtype for a in arrays))
                if path in out:
                    del out[path]  # X: the empty placeholder written by concat_on_disk
                target = out.require_group(group) if group else out
                dset = target.create_dataset(key, shape=(sum(len(a) for a in arrays), *width),
                                             dtype=dtype)  # fmt: skip
                dset.attrs.update(ARRAY_ENCODING)
                start = 0
                for array, cols in zip(arrays, columns, strict=True):
                    per_row = max(1, int(np.prod(array.shape[1:], dtype=np.int64)))
                    if cols is not None:  # a block is held with its copy in the output's genes
                        per_row += len(cols)
                    step = max(1, max_loaded_elems // per_row)
                    for lo in range(0, len(array), step):
                        block = np.asarray(array[lo : lo + step])
                        if cols is not None:
                            aligned = np.zeros((len(block), len(cols)), dtype=dtype)
                            have = cols >= 0
                            aligned[:, have] = block[:, cols[have]]
                            block = aligned
                        dset[start + lo : start + lo + len(block)] = block
                    start += len(array)
            finally:
                for h5 in sources:
                    h5.close()


def _linked_view(
    src: Path, var: pd.DataFrame | None, dst: Path, dense: Sequence[DenseElement] = ()
) -> Path:
    """A small ``.h5ad`` holding ``var`` (``None``: ``src``'s); other elements link to ``src``.

    HDF5 external links: nothing but ``var`` is written, and ``concat_on_disk`` reads the
    original matrices through the links. The ``dense`` elements are left out (a dense ``X``
    becomes an empty CSR matrix of its shape), for :func:`_write_dense` to write.
    """
    import h5py
    import scipy.sparse as sp
    from anndata.io import write_elem

    from .._core._ondisk import open_h5

    link = os.fspath(src)
    with open_h5(src) as f:
        attrs = dict(f.attrs)
        keys = [k for k in f if k != "var" or var is None]
        x_shape = f["X"].shape if ("", "X") in dense else None
        groups = {g: (dict(f[g].attrs), list(f[g])) for g in ("layers", "obsm")
                  if any(d[0] == g for d in dense) and isinstance(f.get(g), h5py.Group)}  # fmt: skip
    with h5py.File(dst, "w") as out:
        for k, v in attrs.items():
            out.attrs[k] = v
        for k in keys:
            if k == "X" and ("", "X") in dense:
                write_elem(out, "X", sp.csr_matrix(x_shape, dtype=np.float32))
            elif k in groups:
                group_attrs, members = groups[k]
                group = out.create_group(k)
                group.attrs.update(group_attrs)
                for m in members:
                    if (k, m) not in dense:
                        group[m] = h5py.ExternalLink(link, f"/{k}/{m}")
            else:
                out[k] = h5py.ExternalLink(link, f"/{k}")
        if var is not None:
            write_elem(out, "var", var)
    return dst
