"""Fixtures shared by every test folder."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest


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
def h5_writer():
    """``with h5_writer(path):`` runs the block while another process writes ``path``."""
    return _writer_holding
