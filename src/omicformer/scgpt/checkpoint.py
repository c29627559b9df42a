"""Official scGPT checkpoint I/O: folders with ``args.json``, ``vocab.json`` and ``best_model.pt``.

Released checkpoints were trained with flash-attn, which stores attention as
``self_attn.Wqkv.*`` (``self_attn._impl.Wqkv.*`` in newer releases); those rows are ``[q; k; v]``
exactly like torch's packed ``in_proj_weight``, so a rename suffices. Checkpoints also carry
weights a task does not need: the heads the weights reveal (``flag_encoder`` from generative
pretraining, a ``cls_decoder`` with the file's class count, the MVC decoder) are built and
loaded, and what the model has no place for (a batch discriminator; batch-specific parts when
embedding) is skipped and reported. We raise only when a weight the task needs is missing or
has the wrong shape, or when the file holds weights of those parts that the model built from
``args.json`` has no place for (encoder layers beyond ``nlayers``).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .._core._checks import config_bool, config_int
from ._vocab import PAD_TOKEN, GeneVocab
from .module import ScGPTConfig, TransformerModel

OFFICIAL_FILES = ("args.json", "vocab.json", "best_model.pt")
TASK_PREFIXES = {
    "embed": ("encoder.", "value_encoder.", "transformer_encoder."),
    "pretrain": ("encoder.", "value_encoder.", "transformer_encoder.", "decoder."),
}
_RENAMES = [
    (re.compile(r"self_attn\._impl\.Wqkv\."), "self_attn.in_proj_"),
    (re.compile(r"self_attn\.Wqkv\."), "self_attn.in_proj_"),
    (re.compile(r"self_attn\._impl\.out_proj\."), "self_attn.out_proj."),
]


def is_official_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like an official scGPT checkpoint folder."""
    path = Path(path)
    return path.is_dir() and (path / "best_model.pt").exists() and (path / "args.json").exists()


def rename_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map flash-attn / DDP key names to ours (``Wqkv`` -> ``in_proj_``, no ``module.``).

    A state dict whose every key starts with ``model.`` (a Lightning module holding the
    model as ``self.model``) loses that prefix too.
    """
    out, source = {}, {}
    lightning = bool(state) and all(str(key).startswith("model.") for key in state)
    for original, value in state.items():
        key = original[len("model.") :] if lightning else original
        key = key[len("module.") :] if key.startswith("module.") else key
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        if key in out:  # e.g. both self_attn.Wqkv.weight and self_attn.in_proj_weight
            msg = (
                f"best_model.pt holds both {source[key]!r} and {original!r}, which are the same "
                f"weight ({key!r}); keep one of them in the state dict."
            )
            raise ValueError(msg)
        out[key], source[key] = value, original
    return out


def _arg(args: dict[str, Any], names: tuple[str, ...], default: Any) -> tuple[str, Any]:
    """``(name, value)`` of the first of ``names`` in ``args``, else ``(names[0], default)``."""
    for name in names:
        if name in args:
            return name, args[name]
    return names[0], default


def _int_arg(
    args: dict[str, Any], names: tuple[str, ...], default: int, source: str, minimum: int = 1
) -> int:
    """An integer setting of ``args.json`` (``>= minimum``); a clear error naming the key if not."""
    name, raw = _arg(args, names, default)
    return config_int(
        raw, name, source, minimum, hint="set it to the value the checkpoint was trained with"
    )


def max_seq_len(args: dict[str, Any], source: str = "args.json", default: int = 1200) -> int:
    """Tokens per cell of an official checkpoint: ``args.json``'s ``max_seq_len``, else ``default``.

    Parameters
    ----------
    args
        The settings read from ``args.json``.
    source
        How errors name ``args.json``.
    default
        The length when ``args.json`` records none (the official ``embed_data``'s 1200).

    Returns
    -------
    The length, ``<cls>`` included (at least 2: ``<cls>`` and one gene).

    Raises
    ------
    ValueError
        ``max_seq_len`` is not an integer >= 2 (``"abc"``, ``3.7``, ``-5``, ``null``, ``true``).
    """
    return _int_arg(args, ("max_seq_len",), default, source, minimum=2)


def _float_arg(args: dict[str, Any], name: str, default: float, source: str) -> float:
    """A number setting of ``args.json``; a clear error naming the key if it is not a number."""
    raw = args.get(name, default)
    try:
        if isinstance(raw, bool):
            raise TypeError
        return float(raw)
    except (TypeError, ValueError):
        msg = (
            f"{source}: {name!r} must be a number, got {raw!r}; set it to the value the checkpoint "
            "was trained with."
        )
        raise ValueError(msg) from None


def config_from_official(
    args: dict[str, Any],
    state: dict[str, torch.Tensor],
    vocab: GeneVocab,
    task: str = "embed",
    source: str = "args.json",
) -> ScGPTConfig:
    """Architecture from ``args.json`` plus what the weights reveal (heads present, class count).

    For ``task="embed"`` batch-specific parts (batch tokens, DSBN, discriminator) are left out,
    as in the official ``embed_data``.

    Parameters
    ----------
    args
        The settings read from ``args.json``.
    state
        The checkpoint's weights, with our key names (:func:`rename_official_keys`).
    vocab
        The checkpoint's vocabulary.
    task
        ``"embed"`` or ``"pretrain"``.
    source
        How errors name ``args.json`` (e.g. ``"args.json of scGPT_human"``).

    Returns
    -------
    The module configuration.

    Raises
    ------
    ValueError
        When a setting has the wrong type (``"embsize": "sixteen"``, ``"nlayers": null``) or
        one the weights need is absent (``n_bins`` for category-style value embeddings).
    """
    pad_token = args.get("pad_token", PAD_TOKEN)
    if pad_token != PAD_TOKEN:
        msg = f"{source}: pad_token={pad_token!r}; only '<pad>' checkpoints are supported."
        raise ValueError(msg)
    style = args.get("input_emb_style", "continuous")
    if "value_encoder.embedding.weight" in state:
        style = "category"
    if style == "category" and "n_bins" not in args:
        hint = ""
        if "value_encoder.embedding.weight" in state:
            rows = state["value_encoder.embedding.weight"].shape[0]
            hint = (
                f' (best_model.pt\'s value_encoder.embedding has {rows} rows: "n_bins": {rows - 2})'
            )
        msg = (
            f"{source} has no 'n_bins', which category-style value embeddings need; add the "
            f"number of expression bins the checkpoint was trained with{hint}."
        )
        raise ValueError(msg)
    n_bins = _int_arg(args, ("n_bins",), 51, source, minimum=2)
    if style == "category" and "value_encoder.embedding.weight" in state:
        rows = int(state["value_encoder.embedding.weight"].shape[0])
        if rows != n_bins + 2:
            msg = (
                f"{source}: n_bins={n_bins}, but best_model.pt's value_encoder.embedding has "
                f'{rows} rows (n_bins + 2 expected): set "n_bins": {rows - 2}.'
            )
            raise ValueError(msg)
    if not any(name in args for name in ("nheads", "nhead")):  # the official embed_data needs it
        msg = (
            f"{source} has no 'nheads': the number of attention heads cannot be read from the "
            'weights; add the value the checkpoint was trained with (e.g. "nheads": 8).'
        )
        raise ValueError(msg)
    # category style: the official tutorials pad with bin n_bins (and mask with n_bins + 1)
    pad_default, mask_default = (n_bins, n_bins + 1) if style == "category" else (-2, -1)
    pad_value = _float_arg(args, "pad_value", pad_default, source)
    if style == "category" and not (0 <= pad_value < n_bins + 2 and pad_value == int(pad_value)):
        msg = (
            f"{source}: pad_value={pad_value:g} is no bin of the category-style value "
            f"embedding (0 to {n_bins + 1}); the official tutorials use n_bins ({n_bins})."
        )
        raise ValueError(msg)
    n_cls = (
        state["cls_decoder.out_layer.weight"].shape[0]
        if "cls_decoder.out_layer.weight" in state
        else 1
    )
    cfg = {
        "ntoken": len(vocab),
        "pad_token_id": vocab[PAD_TOKEN],
        "d_model": _int_arg(args, ("embsize", "d_model"), 512, source),
        "nhead": _int_arg(args, ("nheads", "nhead"), 8, source),
        "d_hid": _int_arg(args, ("d_hid",), 512, source),
        "nlayers": _int_arg(args, ("nlayers",), 12, source),
        "nlayers_cls": _int_arg(args, ("n_layers_cls",), 3, source),
        "n_cls": int(n_cls),
        "dropout": _float_arg(args, "dropout", 0.2, source),
        "pad_value": pad_value,
        "mask_value": _float_arg(args, "mask_value", mask_default, source),
        "n_bins": n_bins,
        "do_mvc": any(k.startswith("mvc_decoder.") for k in state),
        "explicit_zero_prob": "decoder.zero_logit.0.weight" in state,
        "input_emb_style": style,
        "n_input_bins": n_bins + 2 if style == "category" else None,
        "use_generative_training": "flag_encoder.weight" in state,
        "pre_norm": config_bool(args.get("pre_norm", False), "pre_norm", source),
    }
    if task != "embed":  # the official embed_data builds its model without batch layers
        domains = {int(m[1]) for k in state if (m := re.match(r"dsbn\.bns\.(\d+)\.", k))}
        if "batch_encoder.embedding.weight" in state:
            cfg["use_batch_labels"] = True
            cfg["num_batch_labels"] = int(state["batch_encoder.embedding.weight"].shape[0])
        if domains:  # DSBN (official DSBN=True: one BatchNorm1d per batch, affine=False)
            cfg["domain_spec_batchnorm"] = True
            cfg.setdefault("num_batch_labels", max(domains) + 1)
    return ScGPTConfig.from_dict(cfg)


def load_state_checked(
    module: TransformerModel, state: dict[str, torch.Tensor], required_prefixes: tuple[str, ...]
) -> dict[str, list[str]]:
    """Load every weight whose name and shape fit; error if a required one does not fit.

    A required weight (one under ``required_prefixes``) is an error when it is missing from
    ``state``, has another shape, or is in ``state`` but not in the model (e.g. encoder layers
    beyond ``args.json``'s ``nlayers``, which would otherwise be dropped silently). Weights of
    other parts (``flag_encoder``, another ``cls_decoder``, a batch discriminator) are optional.

    Parameters
    ----------
    module
        The model built from ``args.json`` and ``vocab.json``.
    state
        The checkpoint's weights, with our key names.
    required_prefixes
        Name prefixes of the weights the task needs (:data:`TASK_PREFIXES`).

    Returns
    -------
    ``{"loaded": [...], "skipped": [...], "missing": [...]}`` where ``skipped`` are checkpoint
    keys not used and ``missing`` are optional model keys left at initialisation.

    Raises
    ------
    ValueError
        When a required weight is missing, mis-shaped or unused.
    """
    own = module.state_dict()
    bad_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    required = [k for k in own if k.startswith(required_prefixes)]
    missing_required = [k for k in required if k not in state]
    bad_required = [s for s in bad_shape if s.startswith(required_prefixes)]
    unused_required = [k for k in state if k.startswith(required_prefixes) and k not in own]
    if missing_required or bad_required or unused_required:
        parts = []
        layers = {
            int(m[1]) for k in state if (m := re.match(r"transformer_encoder\.layers\.(\d+)\.", k))
        }
        n_layers = max(layers, default=-1) + 1
        if n_layers and n_layers != module.config.nlayers:
            parts.append(
                f"args.json has nlayers={module.config.nlayers} but best_model.pt holds "
                f"{n_layers} transformer layer{'s' * (n_layers != 1)} "
                f'(set "nlayers": {n_layers})'
            )
        if missing_required:
            parts.append(f"missing weights {missing_required[:8]}")
        if bad_required:
            parts.append(f"shape mismatches {bad_required[:8]}")
        if unused_required:
            parts.append(f"weights the model has no place for {unused_required[:8]}")
        msg = (
            "Checkpoint does not fit the model built from args.json/vocab.json: "
            + "; ".join(parts)
            + ". Check that args.json (embsize, nheads, d_hid, nlayers) and vocab.json belong to "
            "this best_model.pt."
        )
        raise ValueError(msg)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(usable, strict=False)
    return {
        "loaded": sorted(usable),
        "skipped": sorted(set(state) - set(usable)),
        "missing": sorted(set(own) - set(usable)),
    }


def _read_args(path: Path) -> dict[str, Any]:
    """The settings in ``path/args.json``; a clear error when it is not one JSON object."""
    file = path / "args.json"
    try:
        args = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        msg = (
            f"args.json of {path} is not valid JSON (line {err.lineno}): {err.msg}. Fix it or "
            "download it again; it holds the checkpoint's settings as one JSON object "
            '({"embsize": 512, "nheads": 8, "nlayers": 12, ...}).'
        )
        raise ValueError(msg) from err
    except UnicodeDecodeError as err:
        msg = f"args.json of {path} is not text (JSON); download it again."
        raise ValueError(msg) from err
    if not isinstance(args, dict):
        msg = (
            f"args.json of {path} must hold one JSON object of settings "
            f'({{"embsize": 512, "nheads": 8, "nlayers": 12, ...}}), not a {type(args).__name__}.'
        )
        raise ValueError(msg)
    return args


def _is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a non-empty ``{name: tensor}`` dict."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path/best_model.pt`` (read with ``weights_only=True``).

    A training checkpoint holding the weights under one ``"state_dict"`` or
    ``"model_state_dict"`` key (next to e.g. ``"epoch"``) is unwrapped; anything else that is
    not a ``{name: tensor}`` dict is a clear error.
    """
    file = path / "best_model.pt"
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except EOFError:
        reason = "the file is empty or cut short"
    except RuntimeError as err:  # not a zip archive / truncated zip archive
        reason = str(err).split(". ")[0]
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = (
            f"it holds pickled Python objects ({found.group(1)}), not only tensors"
            if found
            else "it is not a file written by torch.save"
        )
    else:
        reason = ""
    if reason:
        msg = (
            f"best_model.pt of {path} could not be read as PyTorch weights: {reason}. Download it "
            "again, or write it with torch.save(model.state_dict(), ...)."
        )
        raise ValueError(msg) from None
    wrappers = [k for k in ("state_dict", "model_state_dict") if isinstance(raw, dict) and k in raw]
    if not _is_state_dict(raw) and len(wrappers) == 1 and _is_state_dict(raw[wrappers[0]]):
        raw = raw[wrappers[0]]
    if not _is_state_dict(raw):
        if not isinstance(raw, dict):
            what = f"a {type(raw).__name__}"
        elif not raw:
            what = "an empty dict"
        else:
            odd = sorted(str(k) for k, v in raw.items() if not isinstance(v, torch.Tensor))
            what = f"a dict whose entries {odd[:8]} are not tensors"
        msg = (
            f"best_model.pt of {path} holds {what}, not the model's weights (a {{name: tensor}} "
            "dict); write it with torch.save(model.state_dict(), ...)."
        )
        raise ValueError(msg)
    return raw


def load_official(
    path: str | Path, task: str = "embed"
) -> tuple[TransformerModel, GeneVocab, dict[str, Any]]:
    """Load an official scGPT checkpoint folder.

    Parameters
    ----------
    path
        Folder with ``args.json``, ``vocab.json`` and ``best_model.pt`` (e.g. ``scGPT_human``).
    task
        ``"embed"`` needs the gene/value encoders and the transformer; ``"pretrain"`` also the
        expression decoder.

    Returns
    -------
    The module in eval mode, its vocabulary, and a report with ``args``, ``loaded``,
    ``skipped`` (checkpoint keys not used) and ``missing`` (optional model keys not in the file).
    """
    path = Path(path).expanduser()
    if path.is_file():
        msg = (
            f"{path} is a file; pass the checkpoint folder that holds {list(OFFICIAL_FILES)} "
            f"(here {path.parent})."
        )
        raise FileNotFoundError(msg)
    if not path.is_dir():
        msg = f"Checkpoint folder {path} does not exist."
        raise FileNotFoundError(msg)
    missing = [f for f in OFFICIAL_FILES if not (path / f).exists()]
    if missing:
        msg = (
            f"{path} is missing {missing}; an official scGPT checkpoint folder holds "
            f"{list(OFFICIAL_FILES)}."
        )
        raise FileNotFoundError(msg)
    if task not in TASK_PREFIXES:
        msg = f"task must be one of {list(TASK_PREFIXES)}, got {task!r}."
        raise ValueError(msg)
    args = _read_args(path)
    vocab = GeneVocab.from_file(path / "vocab.json")
    state = rename_official_keys(_read_weights(path))
    config = config_from_official(args, state, vocab, task, source=f"args.json of {path}")
    with torch.random.fork_rng(devices=[]):
        # optional weights the checkpoint lacks keep their initialisation: the same for every
        # load, and the user's own torch draws are left alone
        torch.default_generator.manual_seed(0)  # CPU only: the user's GPU streams stay
        module = TransformerModel(config)
    report = load_state_checked(module, state, TASK_PREFIXES[task])
    report["args"] = args
    module.eval()
    return module, vocab, report
