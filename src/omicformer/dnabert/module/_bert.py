"""Hugging Face BERT models for DNABERT: configs, construction (SDPA), pooling, state dicts.

The networks are ``transformers``' own :class:`~transformers.BertForMaskedLM` and
:class:`~transformers.BertForSequenceClassification`; nothing here re-implements BERT. A
classifier whose config says ``classifier_pooling="mean"`` feeds the BERT pooler the mean of the
k-mer states instead of the ``[CLS]`` state (same parameters, so the same checkpoint layout).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..._core._checks import check_int
from ..._core._deprecation import renamed_kwargs
from .._kmers import CLS_ID, MAX_TOKENS, PAD_ID, SEP_ID, vocab_size

MLM = "mlm"
CLASSIFICATION = "classification"
POOLINGS = ("cls", "mean")
SPECIAL_IDS = (PAD_ID, CLS_ID, SEP_ID)


@renamed_kwargs(hidden_size="d_model", intermediate_size="d_hid", max_length="max_len")
def bert_config(
    k: int = 6,
    *,
    n_layers: int = 4,
    d_model: int = 256,
    n_heads: int = 4,
    d_hid: int | None = None,
    max_len: int = MAX_TOKENS,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    **kwargs: Any,
):
    """A :class:`~transformers.BertConfig` shaped like official DNABERT's, scaled down.

    Official DNABERT-6: ``n_layers=12, d_model=768, n_heads=12, d_hid=3072`` (BERT's
    ``hidden_size`` and ``intermediate_size``), vocabulary ``5 + 4**k``, 512 positions, two
    token types, GELU, dropout 0.1.
    """
    from transformers import BertConfig

    # every window needs [CLS], at least one k-mer and [SEP]: refused here, not at first use
    max_len = check_int("max_len", max_len, minimum=3, hint="[CLS], one k-mer and [SEP]")
    if d_model % n_heads:
        msg = f"d_model={d_model} must be divisible by n_heads={n_heads}."
        raise ValueError(msg)
    return BertConfig(
        vocab_size=vocab_size(k),
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=d_hid or 4 * d_model,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=max_len,
        type_vocab_size=2,
        initializer_range=0.02,
        pad_token_id=PAD_ID,
        **kwargs,
    )


def build_bert(config, task: str = MLM, *, seed: int | None = None) -> torch.nn.Module:
    """Instantiate ``BertForMaskedLM`` (``task="mlm"``) or ``BertForSequenceClassification``.

    Uses PyTorch SDPA attention where the installed ``transformers`` supports it; ``seed``
    makes the random initialisation reproducible without touching the global RNG. The model
    is in eval mode (dropout off), as Hugging Face's ``from_pretrained`` returns one.
    """
    from transformers import BertForMaskedLM, BertForSequenceClassification

    cls = {MLM: BertForMaskedLM, CLASSIFICATION: BertForSequenceClassification}[task]
    if task == CLASSIFICATION and classifier_pooling(config) == "mean":
        cls = _mean_pool_classifier()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        try:
            model = cls._from_config(config, attn_implementation="sdpa")
        except (ImportError, ValueError, TypeError):  # older transformers or no SDPA support
            model = cls(config)
    return model.eval()  # as from_pretrained gives it; training switches to train mode


def classifier_pooling(config) -> str:
    """``"cls"`` (official DNABERT, BERT's pooler on ``[CLS]``) or ``"mean"`` (over k-mers)."""
    pooling = getattr(config, "classifier_pooling", None) or "cls"
    if pooling not in POOLINGS:
        msg = f"classifier_pooling={pooling!r} must be one of {POOLINGS}."
        raise ValueError(msg)
    return pooling


@functools.cache
def _mean_pool_classifier() -> type:
    """``BertForSequenceClassification`` whose pooler reads the mean of the real k-mer states."""
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPoolBertForSequenceClassification(BertForSequenceClassification):
        """Saved as (and weight-compatible with) ``BertForSequenceClassification``."""

        hf_architecture = "BertForSequenceClassification"

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            labels = kwargs.pop("labels", None)
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            total, count = mean_pool(out.last_hidden_state, input_ids, SPECIAL_IDS)
            mean = total / count.clamp(min=1)[:, None]
            pooler = self.bert.pooler
            logits = self.classifier(self.dropout(pooler.activation(pooler.dense(mean))))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits.float(), labels.view(-1))
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return MeanPoolBertForSequenceClassification


def rename_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map old (transformers 2.x era) parameter names to current ones.

    ``LayerNorm.gamma/beta`` become ``weight/bias``; ``position_ids`` buffers are dropped.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = value
    return out


def unique_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop entries that share storage with an earlier one (tied weights), for safetensors."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, value in state_dict.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = value
    return out


def mean_pool(hidden: torch.Tensor, input_ids: torch.Tensor, special_ids: tuple[int, ...]):
    """Sum and count of token states over real k-mers (``(B, T, D) -> (B, D), (B,)``)."""
    keep = ~torch.isin(input_ids, torch.as_tensor(special_ids, device=input_ids.device))
    keep = keep.to(hidden.dtype)  # (B, T)
    total = torch.einsum("btd,bt->bd", hidden, keep)  # (B, D)
    return total, keep.sum(dim=1)
