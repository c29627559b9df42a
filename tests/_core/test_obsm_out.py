"""AnnDataChunkWriter: rows in any order into obsm of a new .h5ad / .zarr file."""

from __future__ import annotations

import os

import anndata as ad
import h5py
import numpy as np
import pytest

from omicformer._core._io import ChunkOutput

SUFFIXES = [".h5ad", pytest.param(".zarr", marks=pytest.mark.zarr)]  # zarr: tests/conftest.py


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_rows_in_any_order_land_in_place(tmp_path, suffix):
    rng = np.random.default_rng(0)
    full = rng.normal(size=(23, 5)).astype(np.float32)
    names = [f"cell{i}" for i in range(23)]
    path = tmp_path / f"out{suffix}"
    out = ChunkOutput(full.shape, path, obs_names=names, key="X_emb")
    blocks = [np.array([7, 3, 20, 0]), np.arange(8, 15), np.array([22, 1, 2, 4, 5, 6]),
              np.array([15, 16, 17, 18, 19, 21])]  # fmt: skip
    assert sorted(np.concatenate(blocks)) == list(range(23))
    with out:
        for rows in blocks:
            out.write(rows, full[rows])
    np.testing.assert_array_equal(np.asarray(out.result()), full)
    back = (ad.read_h5ad if suffix == ".h5ad" else ad.read_zarr)(path)
    assert list(back.obs_names) == names and back.n_vars == 0
    np.testing.assert_array_equal(back.obsm["X_emb"], full)
    assert os.listdir(tmp_path) == [path.name]


def test_h5ad_array_is_contiguous_and_mapped_read_only(tmp_path):
    full = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = ChunkOutput(full.shape, tmp_path / "o.h5ad", obs_names=list("abcd"), key="k")
    with out:
        out.write(np.arange(4), full)
    z = out.result()
    assert isinstance(z, np.memmap) and not z.flags.writeable
    np.testing.assert_array_equal(z, full)
    with h5py.File(tmp_path / "o.h5ad", "r") as f:  # anndata's encoding, no compression
        assert dict(f["obsm/k"].attrs) == {"encoding-type": "array", "encoding-version": "0.2.0"}
        assert f["obsm/k"].chunks is None and f["obsm/k"].compression is None


@pytest.mark.zarr
def test_error_inside_block_removes_the_temporary_file(tmp_path):
    out = ChunkOutput((4, 2), tmp_path / "o.zarr", obs_names=list("abcd"))

    def fail_midway():
        with out:
            out.write(np.arange(2), np.ones((2, 2), np.float32))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_midway()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_key_with_a_slash_is_refused_and_no_file_left(tmp_path, suffix):
    # h5py failed with "Unable to synchronously create dataset (component not found)"; zarr
    # wrote obsm/a/b as a nested group, which anndata cannot read back
    path = tmp_path / f"out{suffix}"
    with pytest.raises(ValueError, match=r"key='a/b' contains '/'.*e\.g\. 'a_b'"):
        with ChunkOutput((3, 2), path, obs_names=list("xyz"), key="a/b") as out:
            out.write(np.arange(3), np.ones((3, 2)))
    assert os.listdir(tmp_path) == []


def test_a_key_with_a_slash_is_fine_in_memory_and_in_npy(tmp_path):
    for out_file in (None, tmp_path / "out.npy"):
        with ChunkOutput((3, 2), out_file, obs_names=list("xyz"), key="a/b") as out:
            out.write(np.arange(3), np.full((3, 2), 2.0))
        np.testing.assert_array_equal(np.asarray(out.result()), np.full((3, 2), 2.0))


@pytest.mark.parametrize("suffix", [".npy", ".h5ad"])
def test_long_names_and_symbolic_links(tmp_path, suffix):
    """A name the file system takes works (its temporary name went past 255 bytes), and a link
    is written through, not replaced by a file."""
    full = np.arange(12, dtype=np.float32).reshape(4, 3)
    names = [f"c{i}" for i in range(4)]

    def write(path):
        out = ChunkOutput(full.shape, path, obs_names=names, key="X_emb")
        with out:
            out.write(np.arange(4), full)
        return path

    def read(path):
        return np.load(path) if suffix == ".npy" else ad.read_h5ad(path).obsm["X_emb"]

    long = tmp_path / ("a" * (255 - len(suffix)) + suffix)
    np.testing.assert_array_equal(read(write(long)), full)
    target, link = tmp_path / f"target{suffix}", tmp_path / f"link{suffix}"
    write(target)
    link.symlink_to(target)
    full += 1
    write(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(read(target), full)
    assert sorted(os.listdir(tmp_path)) == sorted([long.name, target.name, link.name])

    # a link that loops, or points into a missing folder, is replaced itself (as before)
    (tmp_path / f"d{suffix}").symlink_to(tmp_path / f"d2{suffix}")
    (tmp_path / f"d2{suffix}").symlink_to(tmp_path / f"d{suffix}")
    (tmp_path / f"e{suffix}").symlink_to(tmp_path / "missing" / f"e{suffix}")
    for name in (f"d{suffix}", f"e{suffix}"):
        write(tmp_path / name)
        assert not (tmp_path / name).is_symlink()
        np.testing.assert_array_equal(read(tmp_path / name), full)


@pytest.mark.zarr
def test_the_format_follows_the_name_given_not_a_links_target(tmp_path):
    """``out.zarr`` linked to a name without the suffix is a zarr store (it was HDF5)."""
    (tmp_path / "out.zarr").symlink_to(tmp_path / "store")
    out = ChunkOutput((2, 2), tmp_path / "out.zarr", obs_names=["a", "b"], key="X")
    with out:
        out.write(np.arange(2), np.eye(2, dtype=np.float32))
    assert (tmp_path / "store").is_dir()
    np.testing.assert_array_equal(ad.read_zarr(tmp_path / "out.zarr").obsm["X"], np.eye(2))
