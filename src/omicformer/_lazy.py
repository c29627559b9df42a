"""Imports that leave the user's random streams as they were.

Some libraries omicformer uses draw from the global generators when first imported: ``jax``
(which scvi-tools imports) from NumPy's, Lightning, umap and pynndescent from Python's
``random``. omicformer imports them lazily, at a user's first call or first import of a model
class, so without care ``np.random.seed(0); scgpt.tl.annotate(...); np.random.rand()`` would
draw another number than without the call. :func:`install` (run by ``import omicformer``) puts
a finder in :data:`sys.meta_path` that wraps the loading of these packages' modules: Python's,
NumPy's and torch's global states are put back once a module has run, and so is torch's
``torch.backends.cudnn.benchmark`` flag, which scvi-tools' modules set on import (a GPU user's
own choice, and cuDNN's algorithm choice deterministic or not). Nothing else about the
import changes, and imports of other packages are not touched. The states are the process's:
what another thread draws from (or seeds) the global generators while such a module runs is
undone with them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import random
import sys
from types import ModuleType
from typing import Any

#: Top-level packages seen to draw from a global generator on import (and those importing
#: them on their first import).
DRAW_ON_IMPORT = frozenset({"jax", "jaxlib", "flax", "optax", "numpyro", "rich", "lightning",
                            "lightning_fabric", "pytorch_lightning", "umap", "pynndescent",
                            "scvi", "scib_metrics"})  # fmt: skip


def _cudnn() -> Any:
    """``torch.backends.cudnn`` where torch is imported (fully), else ``None``."""
    backends = getattr(sys.modules.get("torch"), "backends", None)
    return getattr(backends, "cudnn", None)


def _states() -> tuple[Any, Any, Any, Any]:
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    cudnn = _cudnn()
    return (
        random.getstate(),
        np.random.get_state() if np is not None else None,
        torch.get_rng_state() if torch is not None and hasattr(torch, "get_rng_state") else None,
        None if cudnn is None else cudnn.benchmark,
    )


def _restore(states: tuple[Any, Any, Any, Any]) -> None:
    py, np_state, torch_state, benchmark = states
    random.setstate(py)
    if np_state is not None:
        sys.modules["numpy"].random.set_state(np_state)
    if torch_state is not None:
        sys.modules["torch"].set_rng_state(torch_state)
    if benchmark is not None:
        _cudnn().benchmark = benchmark


class _KeptStateLoader(importlib.abc.Loader):
    """A module's own loader, with the global random states put back after the module ran."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        states = _states()
        try:
            self._loader.exec_module(module)
        finally:
            _restore(states)

    def __getattr__(self, name: str) -> Any:  # resources, get_code, is_package, ...
        if name == "_loader" or name.startswith("__"):  # a copy not yet given its state
            raise AttributeError(name)
        return getattr(self._loader, name)


class _KeptStateFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`DRAW_ON_IMPORT` modules with the other finders; wraps their loaders."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.partition(".")[0] not in DRAW_ON_IMPORT:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, _KeptStateFinder) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _KeptStateLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first in :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _KeptStateFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _KeptStateFinder())
