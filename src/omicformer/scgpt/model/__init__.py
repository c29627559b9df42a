"""scvi-tools-style scGPT model classes (AnnData in, trained models and embeddings out).

:class:`ScGPT` (which imports scvi-tools) is loaded on first access; :func:`load_module` reads a
folder saved by :meth:`ScGPT.save` without scvi-tools, for fast ``scgpt.tl.embed(model=path)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._io import load_module

if TYPE_CHECKING:  # pragma: no cover
    from ._classifier import ScGPTClassifier
    from ._ensemble import ScGPTClassifierEnsemble
    from ._integration import ScGPTIntegration
    from ._perturbation import ScGPTPerturbation
    from ._scgpt import ScGPT

__all__ = [
    "ScGPT",
    "ScGPTClassifier",
    "ScGPTClassifierEnsemble",
    "ScGPTIntegration",
    "ScGPTPerturbation",
    "load_module",
]


def __getattr__(name: str):
    if name == "ScGPT":
        from ._scgpt import ScGPT

        globals()["ScGPT"] = ScGPT
        return ScGPT
    if name == "ScGPTClassifier":
        from ._classifier import ScGPTClassifier

        globals()["ScGPTClassifier"] = ScGPTClassifier
        return ScGPTClassifier
    if name == "ScGPTClassifierEnsemble":
        from ._ensemble import ScGPTClassifierEnsemble

        globals()["ScGPTClassifierEnsemble"] = ScGPTClassifierEnsemble
        return ScGPTClassifierEnsemble
    if name == "ScGPTIntegration":
        from ._integration import ScGPTIntegration

        globals()["ScGPTIntegration"] = ScGPTIntegration
        return ScGPTIntegration
    if name == "ScGPTPerturbation":
        from ._perturbation import ScGPTPerturbation

        globals()["ScGPTPerturbation"] = ScGPTPerturbation
        return ScGPTPerturbation
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
