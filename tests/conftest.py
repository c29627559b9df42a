"""Fixtures shared by every test folder."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``zarr`` where zarr is not installed (anndata requires it from 0.12)."""
    if importlib.util.find_spec("zarr") is None:
        skip = pytest.mark.skip(reason="zarr not installed")
        for item in items:
            if item.get_closest_marker("zarr"):
                item.add_marker(skip)


@contextlib.contextmanager
def _writer_holding(path):
    """Another process holding ``path`` open for writing (HDF5 lock) inside the block."""
    code = (
        "import h5py, sys\n"
        f"f = h5py.File({str(path)!r}, 'r+'); print('open', flush=True); sys.stdin.read()"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "open"
        yield writer
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)


@pytest.fixture
def cli_error():
    """``cli_error(argv)``: the one-line error an ``omicformer`` command ends with.

    The ``SystemExit(message)`` of :func:`omicformer.cli.main`, as the shell shows it: a
    message (exit status 1) on one line.
    """
    from omicformer.cli import main

    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert isinstance(exc.value.code, str), exc.value.code
        assert "\n" not in exc.value.code
        return exc.value.code

    return error


@pytest.fixture
def weights_write_fails(monkeypatch):
    """``weights_write_fails(when, error)``: safetensors writes of a file whose path contains
    ``when`` write a few bytes, then raise ``error`` (a full disk, a Ctrl-C)."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def arm(when: str, error: BaseException) -> None:
        def save_file(tensors, filename, *args, **kwargs):
            if when in str(filename):
                with open(filename, "wb") as f:
                    f.write(b"\0" * 16)
                raise error
            return real(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)

    return arm


@pytest.fixture
def h5_writer():
    """``with h5_writer(path):`` runs the block while another process writes ``path``."""
    return _writer_holding


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


class AnnDataSnapshot:
    """``obs``, ``var``, ``X``, layers and the keys of ``uns``/``obsm`` of an AnnData, copied."""

    def __init__(self, adata) -> None:
        self.obs, self.var = adata.obs.copy(), adata.var.copy()
        self.X = _dense(adata.X).copy()
        self.layers = {k: _dense(v).copy() for k, v in adata.layers.items()}
        self.uns, self.obsm = sorted(adata.uns), sorted(adata.obsm)

    def assert_unchanged(self, adata) -> None:
        """Fail unless ``adata`` still holds what was copied."""
        pd.testing.assert_frame_equal(adata.obs, self.obs)
        pd.testing.assert_frame_equal(adata.var, self.var)
        np.testing.assert_array_equal(_dense(adata.X), self.X)
        assert sorted(adata.layers) == sorted(self.layers)
        for k, v in self.layers.items():
            np.testing.assert_array_equal(_dense(adata.layers[k]), v)
        assert sorted(adata.uns) == self.uns
        assert sorted(adata.obsm) == self.obsm


@pytest.fixture(scope="session")
def snapshot():
    """``snap = snapshot(adata)``, later ``snap.assert_unchanged(adata)``."""
    return AnnDataSnapshot
