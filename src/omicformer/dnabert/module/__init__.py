"""DNABERT networks and training primitives: plain torch, no AnnData.

Span masking (:func:`span_mask_tokens`), batch collators and datasets, Hugging Face
``transformers`` BERT builders, and the initialisations that let a small DNABERT leave the
k-mer-frequency plateau (:func:`compositional_kmer_init`, :func:`use_compositional_embeddings`,
:func:`sinusoidal_position_init`, :func:`use_random_position_offsets`).
"""

from ._bert import (
    CLASSIFICATION,
    MLM,
    POOLINGS,
    bert_config,
    build_bert,
    classifier_pooling,
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
from ._positions import (
    RandomOffsetPositionEmbedding,
    remove_random_position_offsets,
    use_random_position_offsets,
)

__all__ = [
    "CLASSIFICATION",
    "DEFAULT_EXCLUDE_IDS",
    "MASK_LIST",
    "MLM",
    "POOLINGS",
    "CompositionalKmerEmbedding",
    "RandomOffsetPositionEmbedding",
    "SpanMaskingCollator",
    "TokenDataset",
    "bert_config",
    "build_bert",
    "classification_collate",
    "classifier_pooling",
    "compositional_kmer_init",
    "mean_pool",
    "merge_compositional_embeddings",
    "pad_batch",
    "remove_random_position_offsets",
    "rename_legacy_keys",
    "sinusoidal_position_init",
    "span_mask_positions",
    "span_mask_tokens",
    "unique_tensors",
    "use_compositional_embeddings",
    "use_random_position_offsets",
]
