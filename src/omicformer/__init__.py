"""omicformer: scGPT and DNABERT foundation models for AnnData users.

Submodules are imported lazily so that ``import omicformer`` stays fast:

>>> from omicformer import scgpt, dnabert, datasets
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omicformer._lazy import install as _install_import_guard
from omicformer._version import __version__ as __version__

_install_import_guard()  # libraries that draw from the global generators on import: not ours

__all__ = ["datasets", "dnabert", "scgpt"]

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, dnabert, scgpt


def __getattr__(name: str):
    if name in __all__:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
