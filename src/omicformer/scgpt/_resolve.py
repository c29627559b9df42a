"""Resolve the ``model=`` argument of ``scgpt.tl`` functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._core._io import is_model_dir, load_model_config
from ._vocab import GeneVocab
from .checkpoint import OFFICIAL_FILES, load_official
from .module import TransformerModel

DEFAULT_MODEL_DIR = Path(__file__).parent / "_data" / "default_model"
#: Tokens per cell of the official ``embed_data``, and of models that record no length.
OFFICIAL_MAX_LEN = 1200
#: Expression bins of the official ``embed_data`` (its ``DataCollator`` fixes 51, whatever
#: ``args.json`` says).
OFFICIAL_N_BINS = 51


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
    if isinstance(model, str | os.PathLike):
        path = Path(model).expanduser()
        if path.is_file():
            msg = (
                f"model={os.fspath(model)!r} is a file; pass the checkpoint folder that holds it "
                f"({os.fspath(path.parent)!r})."
            )
            raise FileNotFoundError(msg)
        if not path.is_dir():
            msg = f"model={os.fspath(model)!r}: no such folder. Pass 'default', a checkpoint folder or a model."
            raise FileNotFoundError(msg)
        if is_model_dir(path):
            module, vocab = _load_ours(path)
            return module, vocab, str(path)
        if (path / "ensemble.json").is_file():
            msg = (
                f"model={os.fspath(model)!r} holds an ScGPTClassifierEnsemble (several models): "
                f"pass one member's folder, e.g. {os.fspath(path / 'member_0')!r}."
            )
            raise ValueError(msg)
        module, vocab, _ = load_official(path, task=task)
        return module, vocab, str(path)
    msg = (
        f"model={model!r} is not understood: pass 'default', a folder with {list(OFFICIAL_FILES)}, "
        "a folder saved by ScGPT.save(), or an ScGPT model."
    )
    raise TypeError(msg)


def gene_selection_of(model: Any) -> str:
    """How ``model`` keeps the genes of cells longer than ``max_len`` (``"random"``: official).

    A model object or a folder saved by :meth:`~omicformer.scgpt.model.ScGPT.save` says which
    it was trained with (folders saved before the setting existed: ``"random"``); official
    checkpoints, the default model and bare modules keep a random subset.
    """
    return str(_model_setting(model, "gene_selection", "random"))


def max_len_of(model: Any) -> int:
    """Tokens per cell ``model`` embeds with (``<cls>`` included).

    A model object or a folder saved by :meth:`~omicformer.scgpt.model.ScGPT.save` (the default
    model too) records it: 256 for models fine-tuned by ``tl.annotate``/``tl.integrate``, 1200
    for the default model. Official checkpoints and bare modules: 1200, as the official
    ``embed_data``.
    """
    if isinstance(model, str) and model == "default":
        model = DEFAULT_MODEL_DIR
    if isinstance(model, str | os.PathLike) and is_model_dir(Path(model).expanduser()):
        from .model._io import saved_max_len

        return saved_max_len(
            load_model_config(Path(model).expanduser()), model, default=OFFICIAL_MAX_LEN
        )
    return int(_model_setting(model, "max_len", OFFICIAL_MAX_LEN))


def n_bins_of(model: Any, module: TransformerModel) -> int:
    """Expression bins to embed with.

    51 for an official folder (continuous values), as the official ``embed_data`` bins; else
    the module's own ``n_bins`` (what it was trained with).
    """
    official = isinstance(model, str | os.PathLike) and model != "default"
    if official and not is_model_dir(Path(model).expanduser()):
        if module.config.input_emb_style == "continuous":
            return OFFICIAL_N_BINS
    return int(module.config.n_bins)


def _model_setting(model: Any, name: str, default: Any) -> Any:
    """Setting ``name`` of a model object or of a saved folder's ``model_settings``, else ``default``."""
    if hasattr(model, "module") and hasattr(model, "vocab"):
        return getattr(model, name, default)
    if isinstance(model, str) and model == "default":
        model = DEFAULT_MODEL_DIR
    if isinstance(model, str | os.PathLike) and is_model_dir(Path(model).expanduser()):
        return (
            load_model_config(Path(model).expanduser()).get("model_settings", {}).get(name, default)
        )
    return default


def describe_model(model: Any) -> str:
    """How ``uns`` records the ``model=`` argument: the path as given, else the class name."""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    return type(model).__name__


def _load_ours(path: Path) -> tuple[TransformerModel, GeneVocab]:
    from .model import load_module

    module, vocab, _ = load_module(path)
    return module, vocab


def needs_batch_labels(module: TransformerModel) -> bool:
    """Whether the module has batch-dependent layers (batch tokens or DSBN)."""
    c = module.config
    return bool(c.use_batch_labels or c.domain_spec_batchnorm)


def known_batches(model: Any) -> list | None:
    """The batch categories a model was trained with, in code order (``None``: not recorded)."""
    from scvi import REGISTRY_KEYS

    if hasattr(model, "get_state_registry"):
        registry = model.registry_
    elif isinstance(model, str | os.PathLike) and is_model_dir(model):
        from .._core._io import load_model_config
        from .model._io import registry_from_json

        registry = registry_from_json(load_model_config(model).get("registry", {}))
    else:
        return None
    field = registry.get("field_registries", {}).get(REGISTRY_KEYS.BATCH_KEY, {})
    mapping = field.get("state_registry", {}).get("categorical_mapping")
    return None if mapping is None else list(np.asarray(mapping).tolist())


def batch_codes(values: Any, mapping: list, key: str) -> np.ndarray:
    """Integer code of every value under ``mapping``; ``ValueError`` naming unseen batches.

    Values and mapping are compared as text: a column of integers (or booleans) matches the
    categories it was registered with, whether those were kept as numbers or as strings.
    """
    raw = pd.Series(np.asarray(values, dtype=object))
    if raw.isna().any():
        cells = np.flatnonzero(raw.isna().to_numpy())
        msg = (
            f"adata.obs[{key!r}] is missing for {len(cells)} cell(s) (positions "
            f"{cells[:5].tolist()}); every cell needs its batch: fill them in (one of "
            f"{list(mapping)[:10]}) or leave those cells out."
        )
        raise ValueError(msg)
    lookup = {str(v): i for i, v in enumerate(mapping)}
    values = np.asarray([str(v) for v in raw], dtype=object)
    unknown = sorted({str(v) for v in values if v not in lookup})
    if unknown:
        msg = (
            f"adata.obs[{key!r}] has batches {unknown[:5]} unseen in training (known: "
            f"{list(mapping)[:10]}); batch-dependent layers exist only for those batches."
        )
        raise ValueError(msg)
    return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))
