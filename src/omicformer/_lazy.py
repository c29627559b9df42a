"""Lazy submodule imports that leave the user's random streams as they were."""

from __future__ import annotations

import functools
import importlib
import random
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

_R = TypeVar("_R")


def import_submodule(name: str, package: str) -> ModuleType:
    """``importlib.import_module(f".{name}", package)``, the global random states put back.

    Some dependencies draw from the global generators when first imported: ``jax`` (through
    scvi-tools) from NumPy's, Lightning, umap and pynndescent from Python's ``random``. The
    namespaces are imported at a user's first ``scgpt.tl``/``dnabert.model``...; that must not
    move the user's own draws (docs/conventions.md, "Training").
    """
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    torch = sys.modules.get("torch")
    torch_state = torch.get_rng_state() if torch is not None else None
    try:
        return importlib.import_module(f".{name}", package)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        if torch_state is not None:
            torch.set_rng_state(torch_state)


def keeps_global_rng(fn: Callable[..., _R]) -> Callable[..., _R]:
    """``fn`` gives the caller's global random states back (``_core._random.kept_global_rng``).

    For the public functions: what they import on a first call (jax through scvi-tools,
    Lightning, umap) may draw, and training seeds the global generators. torch is imported
    when the function runs, not with the module defining it (``dnabert.pp``/``pl``/``tl``
    import without torch).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        from ._core._random import kept_global_rng

        with kept_global_rng():
            return fn(*args, **kwargs)

    return wrapper
