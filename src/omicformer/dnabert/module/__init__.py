"""DNABERT networks and training primitives: plain torch, no AnnData.

Span masking (:func:`span_mask_tokens`), batch collators and datasets, and Hugging Face
``transformers`` BERT builders.
"""

from ._bert import (
    CLASSIFICATION,
    MLM,
    bert_config,
    build_bert,
    mean_pool,
    rename_legacy_keys,
    unique_tensors,
)
from ._data import SpanMaskingCollator, TokenDataset, classification_collate, pad_batch
from ._masking import DEFAULT_EXCLUDE_IDS, MASK_LIST, span_mask_positions, span_mask_tokens

__all__ = [
    "CLASSIFICATION",
    "DEFAULT_EXCLUDE_IDS",
    "MASK_LIST",
    "MLM",
    "SpanMaskingCollator",
    "TokenDataset",
    "bert_config",
    "build_bert",
    "classification_collate",
    "mean_pool",
    "pad_batch",
    "rename_legacy_keys",
    "span_mask_positions",
    "span_mask_tokens",
    "unique_tensors",
]
