"""Folders written by :meth:`ScGPT.save`: ``model.safetensors``, ``omicformer_config.json``, ``vocab.json``.

Kept free of scvi-tools and Lightning imports so that ``scgpt.tl.embed(model=path)`` loads a
saved model quickly through :func:`load_module`.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._core._checks import check_int, config_bool, config_int
from ..._core._io import CONFIG_NAME, is_model_dir, load_model_dir, shape_mismatches
from .._vocab import GeneVocab
from ..module import ScGPTConfig, TransformerModel

VOCAB_NAME = "vocab.json"
ADATA_NAME = "adata.h5ad"
MODEL_NAME = "ScGPT"
#: Model classes whose saved folders hold a scGPT ``TransformerModel`` (all load here).
MODEL_NAMES = (MODEL_NAME, "ScGPTClassifier", "ScGPTIntegration", "ScGPTPerturbation")


def load_module(path: str | Path) -> tuple[TransformerModel, GeneVocab, dict[str, Any]]:
    """Load the torch module, vocabulary and config of a folder saved by :meth:`ScGPT.save`.

    Parameters
    ----------
    path
        Folder with ``model.safetensors``, ``omicformer_config.json`` and ``vocab.json``.

    Returns
    -------
    The :class:`~omicformer.scgpt.module.TransformerModel` (eval mode, on CPU), its
    ``GeneVocab`` and the saved config dict (keys ``module_config``,
    ``model_settings``, ``init_params``, ``registry``, ``history``, ...).

    Examples
    --------
    >>> module, vocab, config = load_module("my_scgpt/")  # doctest: +SKIP
    >>> config["model_settings"]["max_len"]  # doctest: +SKIP
    1200
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        msg = f"{path} is not a folder; pass a folder written by ScGPT.save()."
        raise FileNotFoundError(msg)
    if not is_model_dir(path) or not (path / VOCAB_NAME).exists():
        present = sorted(p.name for p in path.iterdir())
        msg = (
            f"{path} is not a saved ScGPT folder (expected model.safetensors, "
            f"omicformer_config.json and {VOCAB_NAME}; found {present}). Official scGPT folders "
            "(args.json, vocab.json, best_model.pt) load with ScGPT.load_pretrained or "
            "omicformer.scgpt.checkpoint.load_official."
        )
        raise FileNotFoundError(msg)
    state, config = load_model_dir(path)
    if config.get("model") not in MODEL_NAMES or "module_config" not in config:
        msg = f"{path} holds a {config.get('model')!r} model, not a saved ScGPT."
        raise ValueError(msg)
    saved_max_len(config, path, default=1200)  # a bad value is an error here, before any use
    vocab = GeneVocab.from_file(path / VOCAB_NAME)
    module_config = saved_module_config(config["module_config"], path)
    if module_config.ntoken != len(vocab):
        msg = (
            f"{path}: vocab.json has {len(vocab)} tokens but the weights expect "
            f"{module_config.ntoken}; the folder is inconsistent."
        )
        raise ValueError(msg)
    import torch

    with torch.random.fork_rng(devices=[]):  # every weight is loaded: the user's draws stay
        module = TransformerModel(module_config)
    bad = shape_mismatches(state, module.state_dict(), "config")
    if bad:
        msg = (
            f"{path}: the weights in model.safetensors do not have the shapes its "
            f"{CONFIG_NAME} describes ({'; '.join(bad[:8])}); the folder is inconsistent: copy "
            "it again, or save the model again."
        )
        raise ValueError(msg)
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        msg = (
            f"{path}: weights do not fit the saved config (missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]})."
        )
        raise ValueError(msg)
    module.eval()
    return module, vocab, config


def saved_module_config(raw: Any, path: str | os.PathLike[str]) -> ScGPTConfig:
    """The architecture ``module_config`` of a saved folder's config, its fields checked.

    Integer fields (``d_model``, ``nlayers``, ...) must be integers (at least 1; ids at least 0)
    and true/false fields true or false, so that a damaged or hand-edited
    ``omicformer_config.json`` is an error naming the file and the field, not a failure deep
    inside torch (or ``"false"`` read as true).

    Parameters
    ----------
    raw
        ``config["module_config"]`` as read.
    path
        The folder (for the message).

    Returns
    -------
    The :class:`~omicformer.scgpt.module.ScGPTConfig`.
    """
    import dataclasses

    source = os.fspath(Path(path).expanduser() / CONFIG_NAME)
    if not isinstance(raw, dict):
        msg = (
            f"{source}: 'module_config' must be an object of architecture settings, got "
            f"{type(raw).__name__}; save the model again."
        )
        raise ValueError(msg)
    checked = dict(raw)
    for f in dataclasses.fields(ScGPTConfig):
        name, kind = f.name, str(f.type)
        if f.default is dataclasses.MISSING and name not in raw:
            msg = f"{source}: 'module_config' has no {name!r}; save the model again."
            raise ValueError(msg)
        if name not in raw or (raw[name] is None and "None" in kind):
            continue
        field = f"module_config.{name}"
        if kind in ("int", "int | None"):
            low = 0 if name.endswith("_id") else 1
            checked[name] = config_int(raw[name], field, source, low, hint="save the model again")
        elif kind == "bool":
            checked[name] = config_bool(raw[name], field, source)
    return ScGPTConfig.from_dict(checked)


def pretrained_module(
    path: Any, task: str = "pretrain"
) -> tuple[TransformerModel, GeneVocab, dict[str, Any], int]:
    """Weights to start training from: ``(module, vocab, report, max_len)``.

    ``path`` is ``"default"`` (the model shipped with omicformer), a folder saved by
    :meth:`ScGPT.save`, or an official scGPT folder. Official checkpoints get the heads the
    generative objective needs but the file lacks (``flag_encoder``, ``mvc_decoder``) freshly
    initialised and listed in ``report["missing"]``; ``max_len`` is the checkpoint's
    (official ``max_seq_len``, else 1200). ``task``: the parts an official checkpoint must
    hold (:data:`~omicformer.scgpt.checkpoint.TASK_PREFIXES`; ``"embed"``: the encoder only,
    without batch layers).
    """
    import dataclasses

    from ..checkpoint import load_official, max_seq_len

    if isinstance(path, str) and path == "default":
        from .._resolve import DEFAULT_MODEL_DIR

        path = DEFAULT_MODEL_DIR
    if not isinstance(path, str | os.PathLike):
        msg = f"path={path!r} is not understood: pass 'default', a checkpoint folder or an ScGPT model."
        raise TypeError(msg)
    if is_model_dir(path):
        module, vocab, config = load_module(path)
        report = {"source": str(path), "missing": [], "skipped": []}
        return module, vocab, report, saved_max_len(config, path)
    module, vocab, report = load_official(path, task=task)
    max_len = max_seq_len(report["args"], source=f"args.json of {path}")
    report = {"source": str(path), **report}
    c = module.config
    if not (c.use_generative_training and c.do_mvc):
        full = TransformerModel(dataclasses.replace(c, use_generative_training=True, do_mvc=True))
        fresh = full.load_state_dict(module.state_dict(), strict=False).missing_keys
        report["missing"] = sorted(set(report["missing"]) | set(fresh))
        module = full
    return module, vocab, report, max_len


def saved_max_len(
    config: dict[str, Any], path: str | os.PathLike[str], default: int | None = None
) -> int:
    """``model_settings["max_len"]`` of a saved folder's config; an error naming the file if bad.

    Parameters
    ----------
    config
        The folder's ``omicformer_config.json``, read.
    path
        The folder (for the message).
    default
        The length when the config records none; ``None``: that is an error too.

    Returns
    -------
    Tokens per cell the model was trained with (at least 2: ``<cls>`` and one gene).

    Raises
    ------
    ValueError
        ``model_settings`` is not an object holding ``max_len``, or ``max_len`` is not an
        integer >= 2.
    """
    source = f"{os.fspath(Path(path).expanduser() / CONFIG_NAME)}"
    settings = config.get("model_settings", {} if default is not None else None)
    if isinstance(settings, dict) and "max_len" not in settings and default is not None:
        return default
    if not isinstance(settings, dict) or "max_len" not in settings:
        msg = (
            f"{source}: 'model_settings' must be an object holding 'max_len' (tokens per cell), "
            f"got {settings!r}; save the model again with ScGPT.save()."
        )
        raise ValueError(msg)
    return config_int(
        settings["max_len"], "model_settings.max_len", source, minimum=2,
        hint="set it to the tokens per cell the model was trained with, or save it again",
    )  # fmt: skip


def rebuild_module(module: TransformerModel, **changes: Any) -> tuple[TransformerModel, list[str]]:
    """``module`` with a changed architecture, e.g. ``do_dab=True`` or DSBN added.

    Builds a new :class:`TransformerModel` from the module's config with ``changes`` and copies
    every weight whose name and shape still fit; returns it (eval mode, CPU) and the sorted
    names of the freshly initialised parameters and buffers.
    """
    import dataclasses

    import torch

    config = dataclasses.replace(module.config, **changes)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        new = TransformerModel(config)
    old = module.state_dict()
    target = new.state_dict()
    fits = {k: v for k, v in old.items() if k in target and target[k].shape == v.shape}
    new.load_state_dict(fits, strict=False)
    return new.eval(), sorted(set(target) - set(fits))


def registry_to_json(obj: Any) -> Any:
    """Make an scvi-tools registry JSON-serialisable (arrays become tagged lists)."""
    if isinstance(obj, dict):
        return {str(k): registry_to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [registry_to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": [registry_to_json(v) for v in obj.tolist()], "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def registry_from_json(obj: Any) -> Any:
    """Inverse of :func:`registry_to_json`."""
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__", "dtype"}:
            dtype = object if obj["dtype"] == "object" else obj["dtype"]
            return np.asarray(obj["__ndarray__"], dtype=dtype)
        return {k: registry_from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [registry_from_json(v) for v in obj]
    return obj


def without_gene_names(registry: dict) -> dict:
    """Registry without the expression field's gene list.

    Genes are matched by name through the vocabulary, never by column position, and the list
    would make saved folders large.
    """
    import copy

    from scvi import REGISTRY_KEYS

    registry = copy.deepcopy(registry)
    x_state = registry["field_registries"].get(REGISTRY_KEYS.X_KEY, {}).get("state_registry", {})
    x_state.pop("column_names", None)
    return registry


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Dict (nested dicts, lists allowed) with other non-JSON values turned into strings.

    Used for ``init_params`` and ``train_config``: NumPy scalars become numbers, paths and
    other objects (a vocabulary, callbacks) their ``str``.
    """
    return {str(k): _json_value(v) for k, v in d.items()}


def _json_value(v: Any) -> Any:
    if isinstance(v, dict):
        return jsonable(v)
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v if isinstance(v, str | int | float | bool | type(None)) else str(v)


def records_train_config(train: Any) -> Any:
    """Wrap a ``train`` method: once it returns, ``model.train_config_`` holds its arguments.

    ``save`` writes them to the folder's config, so a saved model says how it was trained.
    """
    signature = inspect.signature(train)

    @functools.wraps(train)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self, "_train_depth", 0)
        self._train_depth = depth + 1  # a subclass's train may call its parent's
        try:
            result = train(self, *args, **kwargs)
        finally:
            self._train_depth = depth
        if depth == 0:
            try:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                arguments = dict(list(bound.arguments.items())[1:])
            except TypeError:
                arguments = {"args": list(args), **kwargs}
            extra = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)  # fmt: skip
            arguments |= arguments.pop(extra, None) or {}
            self.train_config_ = {"method": f"{type(self).__name__}.train", "arguments": jsonable(arguments)}  # fmt: skip
        return result

    return wrapper


def check_architecture(
    *, d_model: int, n_layers: int, n_heads: int, d_hid: int | None, n_bins: int | None,
    n_layers_cls: int,
) -> None:  # fmt: skip
    """``ValueError`` naming a size argument of :class:`ScGPT` that is not a usable integer.

    Sizes are integers >= 1 (``n_layers`` and ``n_layers_cls`` may be 0); ``n_bins`` (when
    not ``None``) >= 2, so that expressed genes get a bin ``1 .. n_bins - 1`` apart from zeros
    (with ``n_bins=1`` every value fell into bin 0, the bin of zeros).
    """
    check_int("d_model", d_model)
    check_int("n_heads", n_heads)
    check_int("n_layers", n_layers, minimum=0)
    check_int("n_layers_cls", n_layers_cls, minimum=0)
    if d_hid is not None:
        check_int("d_hid", d_hid, hint="None: d_model")
    if n_bins is not None:
        check_int(
            "n_bins", n_bins, minimum=2, hint="zeros are bin 0, expressed genes 1 .. n_bins - 1"
        )
