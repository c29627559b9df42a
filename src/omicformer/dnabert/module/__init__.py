"""DNABERT networks and training primitives: plain torch, no AnnData.

Span masking (:func:`span_mask_tokens`), batch collators and datasets, Hugging Face
``transformers`` BERT builders, and the initialisations that let a small DNABERT leave the
k-mer-frequency plateau (:func:`compositional_kmer_init`, :func:`use_compositional_embeddings`,
:func:`sinusoidal_position_init`).
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
from ._init import (
    CompositionalKmerEmbedding,
    compositional_kmer_init,
    merge_compositional_embeddings,
    sinusoidal_position_init,
    use_compositional_embeddings,
)
from ._masking import DEFAULT_EXCLUDE_IDS, MASK_LIST, span_mask_positions, span_mask_tokens

__all__ = [
    "CLASSIFICATION",
    "DEFAULT_EXCLUDE_IDS",
    "MASK_LIST",
    "MLM",
    "CompositionalKmerEmbedding",
    "SpanMaskingCollator",
    "TokenDataset",
    "bert_config",
    "build_bert",
    "classification_collate",
    "compositional_kmer_init",
    "mean_pool",
    "merge_compositional_embeddings",
    "pad_batch",
    "rename_legacy_keys",
    "sinusoidal_position_init",
    "span_mask_positions",
    "span_mask_tokens",
    "unique_tensors",
    "use_compositional_embeddings",
]
