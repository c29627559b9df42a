"""DNABERT checkpoint folders: official Hugging Face folders and our own saves.

Read: ``config.json`` (any transformers version, including DNABERT's 2.x fork), weights in
``model.safetensors`` or ``pytorch_model.bin`` (loaded with ``weights_only=True``), and
``vocab.txt``. Written: the same layout (``config.json``, ``model.safetensors``, ``vocab.txt``,
``tokenizer_config.json``, ``special_tokens_map.json``) plus ``omicformer_config.json``
metadata, so ``transformers.BertForMaskedLM.from_pretrained(folder)`` also reads our saves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..._core._checks import config_int
from ..._core._io import (
    CONFIG_NAME,
    MODEL_MARKERS,
    WEIGHTS_NAME,
    check_folder_path,
    load_model_dir,
    model_entries,
    save_model_dir,
    shape_mismatches,
)
from ..._core._staged import staged_folder
from ..._core._warnings import warn_caller
from .._kmers import SPECIAL_TOKENS, kmer_vocab
from .._vocab_files import k_from_vocab, read_vocab_txt
from ..module import CLASSIFICATION, MLM, build_bert, rename_legacy_keys, unique_tensors

HF_CONFIG = "config.json"
VOCAB = "vocab.txt"
TORCH_WEIGHTS = "pytorch_model.bin"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# parameters a checkpoint may lack or carry without harm
_OPTIONAL_MISSING = ("cls.predictions.decoder.", "bert.pooler.")
_IGNORED_EXTRA = ("bert.pooler.", "cls.seq_relationship.", "cls.predictions.decoder.bias")


@dataclass
class Checkpoint:
    """Everything read from a checkpoint folder."""

    config: Any  # transformers.BertConfig
    state_dict: dict[str, torch.Tensor]
    k: int
    task: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / WEIGHTS_NAME).exists():
        from safetensors.torch import load_file

        return load_file(str(path / WEIGHTS_NAME))
    if (path / TORCH_WEIGHTS).exists():
        try:
            state = torch.load(path / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
        except Exception as err:  # EOFError, RuntimeError (zip), UnpicklingError, ...
            msg = (
                f"{path / TORCH_WEIGHTS} could not be read as PyTorch weights "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "download it again."
            )
            raise ValueError(msg) from None
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            msg = (
                f"{path / TORCH_WEIGHTS} holds {type(state).__name__}, not a {{name: tensor}} "
                "dict of weights; download it again."
            )
            raise ValueError(msg)
        return state
    msg = f"{path} has no weights: expected {WEIGHTS_NAME} or {TORCH_WEIGHTS}."
    raise FileNotFoundError(msg)


#: Integer settings of ``config.json`` that shape the model (each at least 1).
_HF_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def _read_hf_config(file: Path) -> dict[str, Any]:
    """``config.json`` as a dict, its integer settings checked; errors name the file and field.

    ``BertConfig`` would take a damaged file's ``"hidden_size": -5`` (or, in transformers
    before 4.56, ``3.7`` or ``"abc"``) and fail later inside torch, without naming the file.
    """
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{file} is not valid JSON ({err}); copy the model folder again."
        raise ValueError(msg) from err
    if not isinstance(raw, dict):
        msg = (
            f"{file} must hold one JSON object (the BERT settings), not a {type(raw).__name__}; "
            "copy the model folder again."
        )
        raise ValueError(msg)
    for name in _HF_INT_FIELDS:
        if name in raw:
            raw[name] = config_int(
                raw[name], name, str(file), hint="copy the model folder again, or fix the file"
            )
    return raw


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a DNABERT folder (official or saved by :meth:`DNABert.save`).

    Parameters
    ----------
    path
        The folder: ``config.json``, ``vocab.txt`` and ``model.safetensors`` or
        ``pytorch_model.bin`` (read with ``weights_only=True``); ``~`` is expanded.

    Returns
    -------
    A :class:`Checkpoint`: the ``BertConfig``, the state dict, ``k`` (from the vocabulary),
    the task (``"mlm"`` or ``"classification"``) and our metadata, if any.

    Raises
    ------
    FileNotFoundError
        ``path`` is a file, does not exist, or lacks ``config.json``.
    """
    from transformers import BertConfig

    path = Path(path).expanduser()
    if path.is_file():
        msg = (
            f"{str(path)!r} is a file; a DNABERT model is a folder (config.json, vocab.txt, "
            f"weights): pass the folder, e.g. {str(path.parent)!r} if the file is in it."
        )
        raise FileNotFoundError(msg)
    if not path.is_dir():
        msg = (
            f"DNABERT model folder {str(path)!r} does not exist; pass a folder with "
            "config.json, vocab.txt and weights (e.g. a download of zhihan1996/DNA_bert_6)."
        )
        raise FileNotFoundError(msg)
    if not (path / HF_CONFIG).exists():
        msg = f"{path} is not a DNABERT folder: {HF_CONFIG} is missing."
        raise FileNotFoundError(msg)
    if (path / CONFIG_NAME).exists():
        state_dict, metadata = load_model_dir(path)
    else:
        state_dict, metadata = _read_weights(path), {}
    raw = _read_hf_config(path / HF_CONFIG)
    config = BertConfig.from_dict({k: v for k, v in raw.items() if k != "transformers_version"})
    meta_k = metadata.get("k")
    if metadata.get("task") not in (None, MLM, CLASSIFICATION):
        msg = (
            f"{path / CONFIG_NAME}: 'task' must be {MLM!r} or {CLASSIFICATION!r}, got "
            f"{metadata['task']!r}; fix the file, or save the model again."
        )
        raise ValueError(msg)

    if (path / VOCAB).exists():
        k = k_from_vocab(read_vocab_txt(path / VOCAB), k=meta_k, source=str(path / VOCAB))
    else:
        sizes = {5 + 4**kk: kk for kk in (3, 4, 5, 6)}
        if config.vocab_size not in sizes:
            msg = (
                f"{path} has no {VOCAB} and vocab_size={config.vocab_size} fits no DNABERT k "
                "(5 + 4**k); the checkpoint's vocab does not fit its k."
            )
            raise ValueError(msg)
        k = k_from_vocab(kmer_vocab(sizes[config.vocab_size]), k=meta_k, source=HF_CONFIG)
        warn_caller(f"{path} has no {VOCAB}; assuming the official k={k} DNABERT vocabulary.")
    n_vocab = 5 + 4**k
    state_dict = rename_legacy_keys(state_dict)
    emb = state_dict.get("bert.embeddings.word_embeddings.weight")
    if config.vocab_size != n_vocab or (emb is not None and emb.shape[0] != n_vocab):
        rows = None if emb is None else emb.shape[0]
        msg = (
            f"{path}: vocab.txt is a k={k} vocabulary ({n_vocab} tokens) but config.json has "
            f"vocab_size={config.vocab_size} and the embedding has {rows} rows; the "
            "checkpoint's vocab does not fit its k."
        )
        raise ValueError(msg)

    task = metadata.get("task")
    if task is None:
        arch = " ".join(raw.get("architectures") or [])
        task = CLASSIFICATION if ("classifier.weight" in state_dict or "Sequence" in arch) else MLM
    if task == CLASSIFICATION and "classifier.weight" in state_dict:
        config.num_labels = int(state_dict["classifier.weight"].shape[0])
    return Checkpoint(config=config, state_dict=state_dict, k=k, task=task, metadata=metadata)


def _keep_pooler(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a masked-LM ``module`` a pooler where the checkpoint has one, frozen.

    Official DNABERT checkpoints are masked-LM models whose BERT has a pooler (DNABERT's
    ``transformers`` fork always builds one; ``transformers``' ``BertForMaskedLM`` has none).
    The masked-LM loss does not use it; fine-tuning starts the classifier's pooler from it,
    as the official ``BertForSequenceClassification.from_pretrained`` of such a folder does.
    Frozen, so that it is no unused trainable parameter under DDP.
    """
    from transformers.models.bert.modeling_bert import BertPooler

    bert = getattr(module, "bert", None)
    has_pooler = any(k.startswith("bert.pooler.") for k in state)
    if bert is not None and getattr(bert, "pooler", None) is None and has_pooler:
        bert.pooler = BertPooler(module.config).requires_grad_(False)


def load_module(ckpt: Checkpoint) -> torch.nn.Module:
    """Build the Hugging Face model for ``ckpt`` and load its weights, checking names."""
    module = build_bert(ckpt.config, ckpt.task, seed=0)
    state = dict(ckpt.state_dict)
    if not any(k.startswith("bert.") for k in state):  # a bare BertModel checkpoint
        state = {f"bert.{k}": v for k, v in state.items()}
    _keep_pooler(module, state)
    expected = set(module.state_dict())
    extra = [k for k in state if k not in expected]
    bad_extra = [k for k in extra if not k.startswith(_IGNORED_EXTRA)]
    if bad_extra:
        msg = (
            f"Checkpoint has parameters this {type(module).__name__} does not know: "
            f"{bad_extra[:5]}; is it a BERT checkpoint?"
        )
        raise ValueError(msg)
    bad_shape = shape_mismatches(state, module.state_dict(), "config.json")
    if bad_shape:
        msg = (
            f"Checkpoint weights do not have the shapes its config.json describes "
            f"({'; '.join(bad_shape[:5])}); check that config.json belongs to these weights."
        )
        raise ValueError(msg)
    result = module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_OPTIONAL_MISSING)]
    if ckpt.task == MLM and any(k.startswith("cls.") for k in missing):
        warn_caller(
            "Checkpoint has no masked-LM head (cls.predictions.*); it was initialised randomly. "
            "Embeddings are unaffected."
        )
        missing = [k for k in missing if not k.startswith("cls.")]
    if ckpt.task == CLASSIFICATION:
        missing = [k for k in missing if not k.startswith("classifier.")]
    if missing:
        msg = f"Checkpoint lacks {len(missing)} BERT parameter(s), e.g. {missing[:5]}."
        raise ValueError(msg)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    return module


def write_checkpoint(
    path: str | Path,
    module: torch.nn.Module,
    *,
    k: int,
    task: str,
    metadata: dict[str, Any],
    overwrite: bool = False,
    half: bool = False,
) -> Path:
    """Write an HF-compatible DNABERT folder plus ``omicformer_config.json`` metadata.

    ``half=True`` stores floating-point weights as float16 (half the size); loading casts
    them back to the model's float32 parameters. A folder that already holds a model (ours or
    an official one: ``config.json``, weights) is a ``FileExistsError`` unless ``overwrite``.
    All or nothing: the files are written aside and moved in once complete, so a failed or
    interrupted write leaves ``path`` as it was.

    Parameters
    ----------
    path
        Folder to write (created if missing; ``~`` is expanded).
    module
        The ``BertForMaskedLM`` or ``BertForSequenceClassification``.
    k
        k-mer length (writes the matching ``vocab.txt``).
    task
        ``"mlm"`` or ``"classification"``.
    metadata
        Written to ``omicformer_config.json`` (labels, history, settings).
    overwrite, half
        As above.

    Returns
    -------
    The folder's path.
    """
    path = Path(path).expanduser()
    check_folder_path(path)
    # any model (ours of either kind, an official download) or a config.json it would replace
    held = model_entries(path) or ([HF_CONFIG] if (path / HF_CONFIG).exists() else [])
    if held and not overwrite:
        shown = [n for n in held if n in (*MODEL_MARKERS, HF_CONFIG)]
        msg = (
            f"{path} already holds a model ({', '.join(shown)}); pass overwrite=True to replace it."
        )
        raise FileExistsError(msg)
    state = unique_tensors(module.state_dict())
    state = {key: v for key, v in state.items() if not key.endswith("position_ids")}
    if half:
        state = {key: v.half() if v.is_floating_point() else v for key, v in state.items()}
    with staged_folder(path, stale=held) as stage:  # the replaced model's entries all go
        save_model_dir(stage, state, {**metadata, "k": k, "task": task})
        config = module.config
        config.architectures = [getattr(module, "hf_architecture", type(module).__name__)]
        (stage / HF_CONFIG).write_text(config.to_json_string(use_diff=False))
        (stage / VOCAB).write_text("\n".join(kmer_vocab(k)) + "\n")
        max_len = int(config.max_position_embeddings)
        tokenizer = {"do_lower_case": False, "max_len": max_len, "model_max_length": max_len}
        (stage / TOKENIZER_CONFIG).write_text(json.dumps(tokenizer, indent=2))
        names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
        specials = dict(zip(names, SPECIAL_TOKENS, strict=True))
        (stage / SPECIAL_TOKENS_MAP).write_text(json.dumps(specials, indent=2))
    return path
