"""Random position offsets for pretraining on short windows (pure torch).

BERT-style pretraining often starts on short sequences (Devlin et al. 2019), but with learned
absolute position embeddings whatever a model learns on short windows is tied to the first
positions: a small DNABERT trained on 64-bp windows predicts garbage at positions beyond 64.
Shifting the positions of each training batch by a random offset (as randomized positional
encodings, Ruoss et al. 2023) trains every position on short, cheap windows, so what the model
learns there holds along the whole 512-token context.
"""

from __future__ import annotations

import torch


class RandomOffsetPositionEmbedding(torch.nn.Module):
    """A position embedding that, in training mode, shifts positions by a random offset.

    Positions ``p >= keep_first`` become ``p + o`` with one ``o`` per batch drawn uniformly
    from ``0 .. num_positions - 1 - max(p)`` (torch's global generator); positions below
    ``keep_first`` (``[CLS]`` at 0) stay. In eval mode it is the wrapped embedding unchanged.

    Parameters
    ----------
    embedding
        The model's ``nn.Embedding`` of positions (``model.bert.embeddings.position_embeddings``).
    keep_first
        Number of leading positions never shifted.
    """

    def __init__(self, embedding: torch.nn.Embedding, keep_first: int = 1) -> None:
        super().__init__()
        self.embedding = embedding
        self.keep_first = keep_first

    @property
    def weight(self) -> torch.nn.Parameter:
        """The wrapped embedding's weight."""
        return self.embedding.weight

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.embedding(position_ids)
        room = self.embedding.num_embeddings - 1 - int(position_ids.max())
        if room <= 0:
            return self.embedding(position_ids)
        offset = int(torch.randint(0, room + 1, ()))
        shifted = torch.where(position_ids >= self.keep_first, position_ids + offset, position_ids)
        return self.embedding(shifted)


def use_random_position_offsets(model: torch.nn.Module, keep_first: int = 1) -> None:
    """Wrap a Hugging Face BERT's position embedding in :class:`RandomOffsetPositionEmbedding`.

    Works on ``BertForMaskedLM`` / ``BertForSequenceClassification`` (``model.bert``) or a bare
    ``BertModel``; undo with :func:`remove_random_position_offsets` before saving.
    """
    emb = getattr(model, "bert", model).embeddings
    if isinstance(emb.position_embeddings, RandomOffsetPositionEmbedding):
        return
    wrapper = RandomOffsetPositionEmbedding(emb.position_embeddings, keep_first)
    wrapper.train(emb.training)  # follow the model's current mode
    emb.position_embeddings = wrapper


def remove_random_position_offsets(model: torch.nn.Module) -> None:
    """Put the plain position embedding back (no-op when none is wrapped)."""
    emb = getattr(model, "bert", model).embeddings
    if isinstance(emb.position_embeddings, RandomOffsetPositionEmbedding):
        emb.position_embeddings = emb.position_embeddings.embedding
