"""Embeddings written to a .npy file chunk by chunk, faults while writing, distributed embedding."""

from __future__ import annotations

import errno
import os
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer._core import _io
from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPT

SUFFIXES = [".h5ad", pytest.param(".zarr", marks=pytest.mark.zarr)]  # zarr: tests/conftest.py

CHUNKED = {"batch_size": 8, "chunk_size": 16, "progress": False}  # 5 chunks of 70 cells


@pytest.fixture
def ckpt(official_ckpt):
    return str(official_ckpt[0])


def _adata(n: int = 70) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(1.5, (n, 30)).astype(np.float32) + np.eye(n, 30, dtype=np.float32)
    a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))  # fmt: skip
    ScGPT.setup_anndata(a)
    return a


@pytest.fixture
def model() -> ScGPT:
    return ScGPT(_adata(), d_model=16, n_layers=1, n_heads=2, random_state=0)


# ---------------------------------------------------------------- out_file equals in memory
def test_out_file_equals_in_memory(model, tmp_path):
    z = model.get_latent_representation(device="cpu", **CHUNKED)
    path = tmp_path / "z.npy"
    zf = model.get_latent_representation(device="cpu", out_file=path, **CHUNKED)
    assert isinstance(zf, np.memmap) and not zf.flags.writeable  # read-only map of the file
    np.testing.assert_array_equal(zf, z)
    np.testing.assert_array_equal(np.load(path), z)
    assert sorted(os.listdir(tmp_path)) == ["z.npy"]  # no temporary file left
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # chunking does not change a cell's embedding beyond float noise
    whole = model.get_latent_representation(device="cpu", batch_size=8, progress=False)
    np.testing.assert_allclose(whole, z, atol=1e-6)


def test_tl_embed_out_file_records_path_instead_of_obsm(ckpt, continuous_adata_factory, tmp_path):
    a = continuous_adata_factory(40)
    mem = tl.embed(a, model=ckpt, device="cpu", copy=True, **CHUNKED)
    backed_path = tmp_path / "a.h5ad"
    a.write_h5ad(backed_path)
    backed = ad.read_h5ad(backed_path, backed="r")
    out = tmp_path / "emb" / "x.npy"
    out.parent.mkdir()
    assert tl.embed(backed, model=ckpt, device="cpu", out_file=out, **CHUNKED) is None
    assert "X_scgpt" not in backed.obsm
    record = backed.uns["scgpt"]["X_scgpt"]
    assert record["out_file"] == str(out.resolve())
    assert record["params"]["chunk_size"] == 16
    assert record["n_genes_matched"] == mem.uns["scgpt"]["X_scgpt"]["n_genes_matched"]
    np.testing.assert_array_equal(np.load(record["out_file"]), mem.obsm["X_scgpt"])
    backed.file.close()


def test_bad_out_file_is_refused_before_any_work(ckpt, continuous_adata_factory, tmp_path):
    a = continuous_adata_factory(10)
    (tmp_path / "data.zarr").mkdir()  # a folder that is not a zarr store
    (tmp_path / "data.zarr" / "keep.txt").write_text("user data")
    for bad, err, match in ((tmp_path / "x.csv", ValueError, r"must end in \.npy, \.h5ad or \.zarr"),
                            (tmp_path / "no" / "x.npy", FileNotFoundError, "does not exist"),
                            (tmp_path / "no" / "x.h5ad", FileNotFoundError, "does not exist"),
                            (tmp_path / "data.zarr", IsADirectoryError, "not a zarr store")):  # fmt: skip
        with pytest.raises(err, match=match):
            tl.embed(a, model=ckpt, device="cpu", out_file=bad, progress=False)
    assert "scgpt" not in a.uns and not a.obsm
    assert os.listdir(tmp_path) == ["data.zarr"]
    assert os.listdir(tmp_path / "data.zarr") == ["keep.txt"]


def test_key_added_with_a_slash_is_refused_where_it_goes_to_a_file(
    ckpt, continuous_adata_factory, tmp_path, monkeypatch
):
    # h5py failed with "Unable to synchronously create dataset" after the model was loaded;
    # zarr (and write_h5ad of a backed AnnData) wrote obsm/a/b, which anndata cannot read back
    import omicformer.scgpt.tl as tl_module

    a = continuous_adata_factory(10)
    mem = tl.embed(a, model=ckpt, device="cpu", key_added="a/b", copy=True, **CHUNKED)
    assert mem.obsm["a/b"].shape == (10, 32)  # in memory, and into a .npy, the key is fine
    tl.embed(a, model=ckpt, device="cpu", key_added="a/b", out_file=tmp_path / "e.npy", **CHUNKED)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), mem.obsm["a/b"])
    del a.uns["scgpt"]
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(tl_module, "resolve_model", no_model)
    # refused before any writing: no zarr needed for the .zarr name
    for data, out in ((a, "e.h5ad"), (a, "e.zarr"), (backed, "e.zarr"), (backed, None)):
        where = "a backed AnnData's .h5ad file" if out is None else f"out_file='{tmp_path / out}'"
        with pytest.raises(
            ValueError, match=rf"key_added='a/b' contains '/', which the keys of {re.escape(where)}"
        ):
            tl.embed(data, model=ckpt, device="cpu", key_added="a/b",
                     out_file=None if out is None else tmp_path / out, **CHUNKED)  # fmt: skip
    assert "scgpt" not in a.uns and not a.obsm and not backed.obsm and "scgpt" not in backed.uns
    assert sorted(os.listdir(tmp_path)) == ["a.h5ad", "e.npy"]
    backed.file.close()


# ---------------------------------------------------------------- obsm of a new h5ad / zarr
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_anndata_out_file_holds_obsm_with_obs_names(model, tmp_path, suffix):
    z = model.get_latent_representation(device="cpu", **CHUNKED)
    path = tmp_path / f"z{suffix}"
    zf = model.get_latent_representation(device="cpu", out_file=path, **CHUNKED)
    np.testing.assert_array_equal(np.asarray(zf), z)
    read = ad.read_h5ad if suffix == ".h5ad" else ad.read_zarr
    back = read(path)
    assert back.shape == (70, 0) and list(back.obsm) == ["X_scgpt"]
    assert list(back.obs_names) == list(model.adata.obs_names)
    np.testing.assert_array_equal(back.obsm["X_scgpt"], z)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file or folder left
    # a second run (other binning ties) replaces the file (or store) in place
    z1 = model.get_latent_representation(device="cpu", random_state=1, **CHUNKED)
    assert not np.array_equal(z1, z)
    model.get_latent_representation(device="cpu", out_file=path, random_state=1, **CHUNKED)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    np.testing.assert_array_equal(read(path).obsm["X_scgpt"], z1)


def test_tl_embed_backed_into_new_h5ad(ckpt, continuous_adata_factory, tmp_path, monkeypatch):
    a = continuous_adata_factory(40)
    mem = tl.embed(a[5:30].copy(), model=ckpt, device="cpu", key_added="emb", copy=True,
                   **CHUNKED)  # fmt: skip
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="the file adata is read from"):
        tl.embed(backed, model=ckpt, device="cpu", out_file=tmp_path / "a.h5ad", **CHUNKED)
    ScGPT.setup_anndata(backed)
    model = ScGPT.load_pretrained(ckpt, backed)
    with pytest.raises(ValueError, match="the file adata is read from"):
        model.get_latent_representation(device="cpu", out_file=tmp_path / "a.h5ad", **CHUNKED)
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/a.h5ad" is the input too: it was replaced
    with pytest.raises(ValueError, match="the file adata is read from"):
        model.get_latent_representation(device="cpu", out_file="~/a.h5ad", **CHUNKED)
    assert sorted(os.listdir(tmp_path)) == ["a.h5ad"]
    out = tmp_path / "emb.h5ad"
    view = backed[5:30]
    tl.embed(view, model=ckpt, device="cpu", key_added="emb", out_file=out, **CHUNKED)
    assert "emb" not in view.obsm and "emb" not in backed.obsm and "scgpt" not in view.uns
    back = ad.read_h5ad(out)
    assert list(back.obs_names) == list(a.obs_names[5:30])
    np.testing.assert_array_equal(back.obsm["emb"], mem.obsm["emb"])
    backed.file.close()


# ---------------------------------------------------------------- faults while writing
def _fail_on_second_write(monkeypatch):
    calls = []
    original = np.memmap.__setitem__

    def setitem(self, key, value):
        calls.append(key)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, key, value)

    monkeypatch.setattr(np.memmap, "__setitem__", setitem)
    return calls


def test_disk_full_mid_write_leaves_no_file(model, tmp_path, monkeypatch, ckpt,
                                           continuous_adata_factory):  # fmt: skip
    final = tmp_path / "z.npy"
    calls = _fail_on_second_write(monkeypatch)
    with pytest.raises(OSError, match="No space left") as info:
        model.get_latent_representation(device="cpu", out_file=final, **CHUNKED)
    assert info.value.errno == errno.ENOSPC and len(calls) == 2  # failed after one chunk
    assert os.listdir(tmp_path) == []  # neither the final file nor the temporary one

    # an older file under the final name survives a failed run untouched; adata too
    a = continuous_adata_factory(40)
    np.save(final, np.arange(3.0))
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        tl.embed(a, model=ckpt, device="cpu", out_file=final, **CHUNKED)
    assert os.listdir(tmp_path) == ["z.npy"]
    np.testing.assert_array_equal(np.load(final), np.arange(3.0))
    assert "scgpt" not in a.uns and not a.obsm


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_disk_full_mid_write_leaves_no_anndata_file(model, tmp_path, monkeypatch, suffix):
    from omicformer._core._obsm_out import AnnDataChunkWriter

    final = tmp_path / f"z{suffix}"
    model.get_latent_representation(device="cpu", out_file=final, **CHUNKED)  # an older result
    before = (ad.read_h5ad if suffix == ".h5ad" else ad.read_zarr)(final).obsm["X_scgpt"]
    calls, original = [], AnnDataChunkWriter.__setitem__

    def setitem(self, rows, values):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, rows, values)

    monkeypatch.setattr(AnnDataChunkWriter, "__setitem__", setitem)
    with pytest.raises(OSError, match="No space left"):
        model.get_latent_representation(device="cpu", out_file=final, random_state=3, **CHUNKED)
    assert os.listdir(tmp_path) == [final.name]  # the older result, untouched
    after = (ad.read_h5ad if suffix == ".h5ad" else ad.read_zarr)(final).obsm["X_scgpt"]
    np.testing.assert_array_equal(after, before)


def test_disk_full_at_allocation_fails_before_embedding(model, tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    monkeypatch.setattr(_io, "_reserve", _io._reserve)  # the real reservation, with the fault
    forwards = []
    monkeypatch.setattr("omicformer.scgpt._embed.encode_tokens",
                        lambda *a, **k: forwards.append(1))  # fmt: skip
    for name in ("z.npy", "z.h5ad"):  # .h5ad: the obsm array is allocated up front too
        with pytest.raises(OSError, match="No space left"):
            model.get_latent_representation(device="cpu", out_file=tmp_path / name, **CHUNKED)
        assert forwards == [] and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- distributed (Lightning)
def test_lightning_path_equals_single_process(model, tmp_path):
    mode = model.module.training
    z = model.get_latent_representation(device="cpu", **CHUNKED)
    via = model.get_latent_representation(accelerator="cpu", devices=1, **CHUNKED)
    np.testing.assert_array_equal(via, z)
    zf = model.get_latent_representation(accelerator="cpu", devices=1, out_file=tmp_path / "z.npy",
                                         **CHUNKED)  # fmt: skip
    np.testing.assert_array_equal(zf, z)
    zh = model.get_latent_representation(accelerator="cpu", devices=1,
                                         out_file=tmp_path / "z.h5ad", **CHUNKED)  # fmt: skip
    np.testing.assert_array_equal(zh, z)
    assert sorted(os.listdir(tmp_path)) == ["z.h5ad", "z.npy"]
    assert model.module.training == mode and model.device.type == "cpu"  # as before
    with pytest.raises(ValueError, match="device='cpu' and accelerator"):
        model.get_latent_representation(device="cpu", devices=2, **CHUNKED)
    with pytest.raises(ValueError, match="chunk_size=0"):
        model.get_latent_representation(batch_size=8, chunk_size=0)


def test_lightning_path_removes_temporary_file_on_error(model, tmp_path, monkeypatch):
    _fail_on_second_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        model.get_latent_representation(accelerator="cpu", devices=1, out_file=tmp_path / "z.npy",
                                         **CHUNKED)  # fmt: skip
    assert os.listdir(tmp_path) == []


DDP_SCRIPT = """
import sys, warnings
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
warnings.filterwarnings("ignore")
from omicformer.scgpt.model import ScGPT

rng = np.random.default_rng(0)
X = rng.poisson(1.5, (70, 30)).astype(np.float32) + np.eye(70, 30, dtype=np.float32)
a = ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
ScGPT.setup_anndata(a)
m = ScGPT(a, d_model=16, n_layers=1, n_heads=2, random_state=0)
kw = dict(batch_size=8, chunk_size=16, progress=False)
ddp = dict(accelerator="cpu", devices=2, strategy="ddp")
z = m.get_latent_representation(**kw, **ddp)
zf = m.get_latent_representation(**kw, **ddp, out_file="ddp.npy")
zh = m.get_latent_representation(**kw, **ddp, out_file="ddp.h5ad")  # written by rank 0
rank = torch.distributed.get_rank()
assert np.array_equal(np.asarray(zh), z)
assert np.array_equal(ad.read_h5ad("ddp.h5ad").obsm["X_scgpt"], z)
np.save(f"rank{rank}.npy", np.asarray(z))
assert np.array_equal(np.asarray(zf), z)
if rank == 0:
    np.save("single.npy", m.get_latent_representation(device="cpu", **kw))
    print(f"THREADS {torch.get_num_threads()}", flush=True)  # Lightning's CPU DDP sets it
print(f"DONE {rank}", flush=True)
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_single_process(tmp_path, model, run_script):
    out, _ = run_script(DDP_SCRIPT)
    assert "DONE 0" in out and "DONE 1" in out, out[-3000:]
    single = np.load(tmp_path / "single.npy")
    for name in ("rank0.npy", "rank1.npy", "ddp.npy"):  # 5 chunks: ranks 0/1 take 3/2
        np.testing.assert_array_equal(np.load(tmp_path / name), single, err_msg=name)
    # and the single-process result of this (pytest) process, same weights and data, with the
    # script's torch thread count (another count may sum in another order: 1-ulp differences)
    threads, before = int(re.search(r"THREADS (\d+)", out).group(1)), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        here = model.get_latent_representation(device="cpu", **CHUNKED)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(here, single)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
