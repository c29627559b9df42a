"""Lazy submodule imports that leave the user's random streams as they were."""

from __future__ import annotations

import importlib
import random
import sys
from types import ModuleType


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
