"""scGPT (Cui et al., Nature Methods 2024) for single-cell RNA-seq in AnnData.

Namespaces follow scanpy: :mod:`~omicformer.scgpt.pp` (preprocessing), :mod:`~omicformer.scgpt.tl`
(tools writing to ``obsm``/``obs``/``uns``), :mod:`~omicformer.scgpt.pl` (plots) and
:mod:`~omicformer.scgpt.model` (scvi-tools-style model classes).
"""

from __future__ import annotations

import importlib

from ._vocab import GeneVocab

__all__ = ["GeneVocab", "model", "pl", "pp", "tl"]


def __getattr__(name: str):
    if name in ("model", "pl", "pp", "tl"):
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
