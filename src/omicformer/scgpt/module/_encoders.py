"""Token encoders of scGPT: gene ids, expression values, batch labels.

Parameter names follow the official implementation (``encoder.embedding``, ``encoder.enc_norm``,
``value_encoder.linear1`` ...) so official checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


class GeneEncoder(nn.Module):
    """Gene-token embedding followed by LayerNorm."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        return self.enc_norm(self.embedding(x))


class ContinuousValueEncoder(nn.Module):
    """Encode a scalar expression value with a 2-layer MLP (values clamped above at ``max_value``)."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_value: int = 512):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        x = x.unsqueeze(-1).clamp(max=self.max_value)
        x = self.activation(self.linear1(x))
        x = self.norm(self.linear2(x))
        return self.dropout(x)


class CategoryValueEncoder(nn.Module):
    """Encode binned expression values as categories (``input_emb_style="category"``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(x.long()))


class BatchLabelEncoder(nn.Module):
    """Embedding of a per-cell batch (or condition) label."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, D)
        return self.enc_norm(self.embedding(x))
