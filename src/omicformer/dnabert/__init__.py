"""DNABERT (Ji et al., Bioinformatics 2021) for genomic regions in AnnData.

Namespaces follow scanpy: :mod:`~omicformer.dnabert.pp` (preprocessing), :mod:`~omicformer.dnabert.tl`
(tools writing to ``varm``/``var``), :mod:`~omicformer.dnabert.pl` (plots) and
:mod:`~omicformer.dnabert.model` (scvi-tools-style model classes).
"""

from __future__ import annotations

import importlib

__all__ = ["model", "pl", "pp", "tl"]


def __getattr__(name: str):
    if name in __all__:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
