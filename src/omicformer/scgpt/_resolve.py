"""Resolve the ``model=`` argument of ``scgpt.tl`` functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._core._io import is_model_dir
from ._vocab import GeneVocab
from .checkpoint import OFFICIAL_FILES, load_official
from .module import TransformerModel

DEFAULT_MODEL_DIR = Path(__file__).parent / "_data" / "default_model"


def resolve_model(model: Any, task: str = "embed") -> tuple[TransformerModel, GeneVocab, str]:
    """Return ``(module, vocab, description)`` for ``model``.

    ``model`` may be ``"default"`` (the small model shipped in the package), a path to an
    official scGPT folder (``args.json``, ``vocab.json``, ``best_model.pt``), a path written by
    :meth:`omicformer.scgpt.model.ScGPT.save`, an :class:`~omicformer.scgpt.model.ScGPT`, or a
    ``(TransformerModel, GeneVocab)`` pair.
    """
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], GeneVocab):
        return model[0], model[1], "TransformerModel"
    if hasattr(model, "module") and hasattr(model, "vocab"):
        return model.module, model.vocab, type(model).__name__
    if isinstance(model, str) and model == "default":
        if not is_model_dir(DEFAULT_MODEL_DIR):
            msg = (
                "The default scGPT model is not installed in this copy of omicformer "
                f"({DEFAULT_MODEL_DIR} is missing); run scripts/train_default_scgpt.py or pass "
                "model=<path to a checkpoint>."
            )
            raise FileNotFoundError(msg)
        module, vocab = _load_ours(DEFAULT_MODEL_DIR)
        return module, vocab, "default"
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_dir():
            msg = f"model={str(model)!r}: no such folder. Pass 'default', a checkpoint folder or a model."
            raise FileNotFoundError(msg)
        if is_model_dir(path):
            module, vocab = _load_ours(path)
            return module, vocab, str(path)
        module, vocab, _ = load_official(path, task=task)
        return module, vocab, str(path)
    msg = (
        f"model={model!r} is not understood: pass 'default', a folder with {list(OFFICIAL_FILES)}, "
        "a folder saved by ScGPT.save(), or an ScGPT model."
    )
    raise TypeError(msg)


def _load_ours(path: Path) -> tuple[TransformerModel, GeneVocab]:
    from .model import load_module

    module, vocab, _ = load_module(path)
    return module, vocab
