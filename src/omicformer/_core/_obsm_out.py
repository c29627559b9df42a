"""Chunked output into ``obsm`` of a new ``.h5ad`` or ``.zarr`` AnnData file, all or nothing.

:class:`AnnDataChunkWriter` is the ``.h5ad``/``.zarr`` counterpart of
:class:`~omicformer._core._io.NpyChunkWriter`: the result is written row block by row block
into ``obsm[key]`` of an AnnData file whose ``obs_names`` are the input's (no ``X``), so that
``anndata.read_h5ad(path).obsm[key]`` (or ``read_zarr``) gives the embedding with its cells,
and ``h5py``/``zarr`` read its rows without loading it. The file is built under a temporary name in the
destination folder and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import check_file_key
from ._tmpnames import temporary_beside, write_target

#: anndata's on-disk encoding of a dense array (the same for HDF5 and zarr).
ARRAY_ENCODING = {"encoding-type": "array", "encoding-version": "0.2.0"}
#: Output suffixes and what they mean.
OUT_SUFFIXES = {".npy": "a NumPy array file", ".h5ad": "obsm of a new AnnData HDF5 file",
                ".zarr": "obsm of a new AnnData zarr store"}  # fmt: skip


def is_zarr_store(path: Path) -> bool:
    """Whether folder ``path`` is a zarr store (v2 ``.zgroup`` or v3 ``zarr.json``)."""
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


class AnnDataChunkWriter:
    """Write an ``(n_obs, d)`` array into ``obsm[key]`` of a new ``.h5ad``/``.zarr`` file.

    The skeleton (``obs`` index, no ``X``) is written by anndata itself, the array is then
    created in place: in HDF5 as one contiguous, uncompressed dataset whose space is allocated
    and reserved up front (a full disk fails at once), in zarr as a chunked array of
    ``chunk_rows`` rows per chunk. On success the temporary file (or folder) is renamed to
    ``path``, replacing an older file or zarr store there; on any error it is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path
        Destination ending in ``.h5ad`` or ``.zarr``; its folder must exist.
    shape, dtype
        Shape ``(n_obs, d)`` and dtype of the array.
    obs_names
        The ``n_obs`` cell names, stored as the file's ``obs`` index.
    key
        ``obsm`` key of the array.
    chunk_rows
        Rows per zarr chunk (HDF5 is contiguous).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, int],
        dtype: Any,
        obs_names: Sequence[str],
        key: str,
        chunk_rows: int = 8192,
    ) -> None:
        self.zarr = Path(path).suffix == ".zarr"  # the name checked, not a link's target's
        self.path = write_target(path)  # a link is written through
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        if len(obs_names) != self.shape[0]:
            msg = f"{len(obs_names)} obs_names for {self.shape[0]} rows."
            raise ValueError(msg)
        check_file_key(key, "key", f"out_file={str(self.path)!r}")
        self.obs_names, self.key = obs_names, str(key)
        self.chunk_rows = max(1, min(int(chunk_rows), self.shape[0] or 1))
        self.tmp_path = temporary_beside(self.path)
        self._file: Any = None
        self.array: Any = None

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> AnnDataChunkWriter:
        try:
            self._write_skeleton()
            self.array = self._create_zarr() if self.zarr else self._create_h5()
        except BaseException:
            self._discard()
            raise
        return self

    def __setitem__(self, rows: np.ndarray, values: np.ndarray) -> None:
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], np.asarray(values, dtype=self.dtype)[order]
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # a contiguous block
            self.array[int(rows[0]) : int(rows[-1]) + 1] = values
        elif self.zarr:
            self.array.oindex[rows] = values
        else:
            self.array[rows.tolist()] = values  # h5py: increasing indices

    def release(self) -> None:
        """Push the rows written so far to disk (nothing of them stays in memory)."""
        if self._file is not None:
            self._file.flush()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._close()
            if self.zarr:
                import zarr

                zarr.consolidate_metadata(str(self.tmp_path))  # anndata reads consolidated
            self._move_into_place()
        except BaseException:
            self._discard()
            raise

    def result(self) -> Any:
        """The finished array, read-only: a memory map (``.h5ad``) or a zarr array."""
        if self.zarr:
            import zarr

            return zarr.open_array(str(self.path / "obsm" / self.key), mode="r")
        import h5py

        with h5py.File(self.path, "r") as f:
            dset = f["obsm"][self.key]
            offset = dset.id.get_offset()
        if offset is None:  # nothing stored (no rows)
            return np.zeros(self.shape, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=offset, shape=self.shape)

    # ------------------------------------------------------------------ internals
    def _write_skeleton(self) -> None:
        import anndata as ad
        import pandas as pd

        skeleton = ad.AnnData(obs=pd.DataFrame(index=pd.Index(self.obs_names, dtype=str)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata: zarr v2 / obs-name warnings
            if self.zarr:
                skeleton.write_zarr(self.tmp_path)
            else:
                skeleton.write_h5ad(self.tmp_path)

    def _create_h5(self) -> Any:
        import h5py

        from ._io import _reserve

        self._file = h5py.File(self.tmp_path, "r+")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # the file's size includes the array
        space = h5py.h5s.create_simple(self.shape)
        dsid = h5py.h5d.create(self._file["obsm"].id, self.key.encode(),
                               h5py.h5t.py_create(self.dtype), space, dcpl=dcpl)  # fmt: skip
        dset = h5py.Dataset(dsid)
        dset.attrs.update(ARRAY_ENCODING)
        self._file.flush()
        _reserve(self.tmp_path)  # a full disk fails here, before any work
        return dset

    def _create_zarr(self) -> Any:
        import zarr

        group = zarr.open_group(str(self.tmp_path), mode="r+")
        arr = group["obsm"].create_array(
            self.key, shape=self.shape, dtype=self.dtype, chunks=(self.chunk_rows, self.shape[1])
        )
        arr.attrs.update(ARRAY_ENCODING)
        return arr

    def _close(self) -> None:
        self.array = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _move_into_place(self) -> None:
        if self.zarr and self.path.exists():
            old = temporary_beside(self.path, "old")
            os.replace(self.path, old)  # a folder cannot be replaced atomically: swap, then drop
            os.replace(self.tmp_path, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp_path, self.path)

    def _discard(self) -> None:
        try:
            self._close()
        except Exception:  # the original error matters, not the close's
            self._file = None
        if self.tmp_path.is_dir():
            shutil.rmtree(self.tmp_path, ignore_errors=True)
        else:
            self.tmp_path.unlink(missing_ok=True)
