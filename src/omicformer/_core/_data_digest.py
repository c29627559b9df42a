"""What a training run reads, as a digest its checkpoints keep (``_resume.check_checkpoint``)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["data_digest"]


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` (a collated batch: tensors, arrays, numbers in dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.kind}{value.shape}".encode())
        if value.dtype.kind in "fc":  # rounded: other CPUs may round the last bits otherwise
            value = np.round(value.astype(np.complex128 if value.dtype.kind == "c" else float), 4)
            value = value + 0.0  # -0.0 is 0.0
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float | np.floating):
        digest.update(repr(round(float(value), 4)).encode())
    elif value is None or isinstance(value, int | str | bool | np.integer | np.bool_):
        digest.update(repr(value).encode())
    else:  # an object of its own: its type only
        digest.update(type(value).__qualname__.encode())


def data_digest(parts: Sequence[tuple[Dataset | None, Callable | None]], n_items: int = 8) -> str:
    """A digest of what a run trains and validates on, kept in its checkpoints.

    For each ``(dataset, collate_fn)`` in ``parts``, up to ``n_items`` evenly spaced items are
    collated as one batch, with torch's generator seeded by a constant in a
    :func:`torch.random.fork_rng` block (NumPy's and Python's global states are put back): the
    run's own random streams are untouched. The batch is what the model reads (tokens, values,
    targets), so the digest changes with the data, its labels or conditions and the settings that
    shape the batches, and not with what the model never sees. Floating-point values are rounded
    to 4 decimals, so that another CPU's last bits do not refuse a resume.

    Parameters
    ----------
    parts
        The training and validation datasets with their collate functions (``None`` for none).
    n_items
        Items collated from each dataset.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=[]):
            for dataset, collate_fn in parts:
                n = 0 if dataset is None else len(dataset)
                digest.update(f"|{n}|".encode())
                if n == 0 or collate_fn is None:
                    continue
                torch.manual_seed(0)
                take = np.unique(np.linspace(0, n - 1, min(int(n_items), n)).round().astype(int))
                _feed(digest, collate_fn([dataset[int(i)] for i in take]))
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return digest.hexdigest()
