"""Compositional initialisation of DNABERT's k-mer embeddings (pure torch).

A randomly initialised DNABERT-k starts with ``4**k`` unrelated k-mer vectors; the overlapping
k-mers ``ACGTAC`` and ``CGTACG`` look as different to it as any two tokens. Under span masking
the answer to a masked k-mer is mostly spelled out by its unmasked neighbours, but a small
model first has to discover that from 4,096 unrelated embeddings, and on a CPU budget it
stalls at the k-mer frequency loss. Starting each k-mer embedding as the sum of per-position
nucleotide vectors gives overlapping k-mers related vectors from step 0; with the output
decoder tied to the embeddings (``BertForMaskedLM``'s default), the initial output layer
scores a k-mer as a sum of per-position base scores, i.e. a product of per-position base
distributions. Only the starting point is structured: every k-mer vector stays a free
parameter, so the model and its checkpoints keep the official DNABERT layout.
"""

from __future__ import annotations

import torch

from .._kmers import N_SPECIAL


@torch.no_grad()
def compositional_kmer_init(
    embedding: torch.nn.Embedding | torch.Tensor,
    k: int,
    *,
    std: float = 0.02,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initialise k-mer embeddings as sums of position-specific nucleotide vectors (in place).

    Row ``5 + i`` of the DNABERT vocabulary is the k-mer whose base-4 digits (A, T, C, G =
    0..3, most significant first, the official ``itertools.product("ATCG", repeat=k)`` order)
    are ``b_0 .. b_{k-1}``; it is set to ``sum_j P[j, b_j]`` where ``P`` is a ``(k, 4, D)``
    tensor drawn from ``N(0, std**2 / k)``, so every row has standard deviation ``std`` as in
    BERT's ``initializer_range``. The five special tokens (``[PAD] [UNK] [CLS] [SEP] [MASK]``)
    get independent ``N(0, std**2)`` rows (``[PAD]`` zero, as ``padding_idx``).

    Parameters
    ----------
    embedding
        A ``torch.nn.Embedding`` (e.g. ``model.bert.embeddings.word_embeddings``) or its
        ``(5 + 4**k, D)`` weight; modified in place. With tied input/output embeddings (the
        Hugging Face default for ``BertForMaskedLM``) the MLM decoder changes with it.
    k
        k-mer size.
    std
        Standard deviation of every initialised row.
    generator
        Torch generator for reproducible draws.

    Returns
    -------
    The ``(k, 4, D)`` position-nucleotide vectors ``P`` (rows in A, T, C, G order).

    Examples
    --------
    >>> import torch
    >>> emb = torch.nn.Embedding(5 + 4**3, 8)
    >>> P = compositional_kmer_init(emb, 3, generator=torch.Generator().manual_seed(0))
    >>> # "ATG" = digits 0, 1, 3 -> row 5 + 0*16 + 1*4 + 3
    >>> torch.allclose(emb.weight[5 + 7], P[0, 0] + P[1, 1] + P[2, 3])
    True
    """
    weight = embedding.weight if isinstance(embedding, torch.nn.Embedding) else embedding
    n_kmers = 4**k
    if weight.ndim != 2 or weight.shape[0] != N_SPECIAL + n_kmers:
        msg = (
            f"Expected a ({N_SPECIAL + n_kmers}, D) embedding for k={k}, got {tuple(weight.shape)}."
        )
        raise ValueError(msg)
    dim = weight.shape[1]
    kw = {"generator": generator, "dtype": torch.float32}
    P = torch.randn(k, 4, dim, **kw) * (std / k**0.5)
    ids = torch.arange(n_kmers)
    rows = torch.zeros(n_kmers, dim)
    for j in range(k):  # digit j (most significant first) of every k-mer index
        digit = (ids // 4 ** (k - 1 - j)) % 4
        rows += P[j, digit]
    special = torch.randn(N_SPECIAL, dim, **kw) * std
    padding_idx = getattr(embedding, "padding_idx", None)
    if padding_idx is not None and 0 <= padding_idx < N_SPECIAL:
        special[padding_idx] = 0
    weight.copy_(torch.cat([special, rows]).to(weight.dtype))
    return P


@torch.no_grad()
def sinusoidal_position_init(
    embedding: torch.nn.Embedding | torch.Tensor, *, std: float = 0.05, base: float = 10_000.0
) -> torch.Tensor:
    """Initialise learned absolute position embeddings with Transformer sinusoids (in place).

    Row ``p`` gets ``sin(p w_i), cos(p w_i)`` in dimensions ``2i, 2i + 1`` with
    ``w_i = base ** (-2i / D)`` (Vaswani et al. 2017), rescaled so that the whole matrix has
    standard deviation ``std``. A dot product of two such rows depends on their distance
    only, so attention can find a token's neighbours from the first step; random N(0, 0.02)
    rows, BERT's default, carry no notion of distance, and a small DNABERT trained for a few
    thousand steps never learns to read the k-mers next to a masked span. The rows remain
    ordinary learned parameters.

    Parameters
    ----------
    embedding
        ``model.bert.embeddings.position_embeddings`` or its ``(positions, D)`` weight
        (``D`` even); modified in place.
    std
        Standard deviation of the result (BERT initialises embeddings with 0.02).
    base
        Wavelength base.

    Returns
    -------
    The new weight.

    Examples
    --------
    >>> import torch
    >>> pos = torch.nn.Embedding(512, 128)
    >>> w = sinusoidal_position_init(pos, std=0.05)
    >>> round(float(w.std()), 3)
    0.05
    """
    weight = embedding.weight if isinstance(embedding, torch.nn.Embedding) else embedding
    n, dim = weight.shape
    if dim % 2:
        msg = f"Sinusoidal position embeddings need an even width, got {dim}."
        raise ValueError(msg)
    position = torch.arange(n, dtype=torch.float64)[:, None]
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    weight.copy_((table / table.std() * std).to(weight.dtype))
    return weight


class CompositionalKmerEmbedding(torch.nn.Module):
    """Word embeddings kept compositional while training: ``W = C(P) + R``.

    ``C(P)`` puts ``sum_j P[j, b_j]`` in the row of every k-mer (zero for the special tokens,
    see :func:`compositional_kmer_init`); ``R`` is a free ``(5 + 4**k, D)`` residual. Every
    k-mer then learns from the gradients of all k-mers sharing a base at a position (1,024 of
    them for k=6) rather than only from its own occurrences. :func:`use_compositional_embeddings`
    puts it into a ``BertForMaskedLM`` as the input embedding and the tied output decoder;
    :func:`merge_compositional_embeddings` writes ``W`` back into a plain ``nn.Embedding``
    so the saved model is an ordinary (official-layout) DNABERT.

    Parameters
    ----------
    P
        ``(k, 4, D)`` position-nucleotide vectors (A, T, C, G order).
    R
        ``(5 + 4**k, D)`` residual rows.
    padding_idx
        Row whose input gradient is dropped (``[PAD]``), as ``nn.Embedding(padding_idx=)``.
    """

    def __init__(self, P: torch.Tensor, R: torch.Tensor, padding_idx: int | None = 0) -> None:
        super().__init__()
        k = P.shape[0]
        if P.shape[1] != 4 or R.shape != (N_SPECIAL + 4**k, P.shape[2]):
            msg = (
                f"P must be (k, 4, D) and R (5 + 4**k, D); got {tuple(P.shape)}, {tuple(R.shape)}."
            )
            raise ValueError(msg)
        self.k, self.padding_idx = k, padding_idx
        self.P = torch.nn.Parameter(P.detach().clone())
        self.R = torch.nn.Parameter(R.detach().clone())
        ids = torch.arange(4**k)
        digits = torch.stack([(ids // 4 ** (k - 1 - j)) % 4 for j in range(k)])
        self.register_buffer("digits", digits, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The current ``(5 + 4**k, D)`` embedding matrix ``C(P) + R``."""
        comp = self.P[0][self.digits[0]]
        for j in range(1, self.k):
            comp = comp + self.P[j][self.digits[j]]
        specials = comp.new_zeros(N_SPECIAL, comp.shape[1])
        return self.R + torch.cat([specials, comp])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(input_ids, self.weight, self.padding_idx)


class _TiedDecoder(torch.nn.Module):
    """Output layer ``h @ W.T + bias`` reading ``W`` from a shared compositional embedding."""

    def __init__(self, embedding: CompositionalKmerEmbedding, bias: torch.nn.Parameter) -> None:
        super().__init__()
        self._embedding = [embedding]  # a reference, not a second registration of P and R
        self.bias = bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self._embedding[0].weight, self.bias)


def use_compositional_embeddings(
    model: torch.nn.Module,
    k: int,
    *,
    std: float = 0.02,
    generator: torch.Generator | None = None,
) -> CompositionalKmerEmbedding:
    """Give a ``BertForMaskedLM`` compositional, tied input/output k-mer embeddings for training.

    Draws ``P`` as :func:`compositional_kmer_init` does (rows of standard deviation ``std``),
    starts ``R`` at zero for the k-mers and at the model's current rows for the special
    tokens, and replaces ``model.bert.embeddings.word_embeddings`` and
    ``model.cls.predictions.decoder``. Undo with :func:`merge_compositional_embeddings`
    before saving or fine-tuning.

    Returns
    -------
    The :class:`CompositionalKmerEmbedding` now inside ``model``.
    """
    old = model.bert.embeddings.word_embeddings
    if not isinstance(old, torch.nn.Embedding):
        msg = "The model's word embeddings are not a plain nn.Embedding (already compositional?)."
        raise TypeError(msg)
    scratch = torch.empty_like(old.weight, dtype=torch.float32)
    P = compositional_kmer_init(scratch, k, std=std, generator=generator)
    R = torch.zeros_like(scratch)
    R[:N_SPECIAL] = old.weight.detach()[:N_SPECIAL].float()
    comp = CompositionalKmerEmbedding(P, R, padding_idx=old.padding_idx).to(old.weight.device)
    model.bert.embeddings.word_embeddings = comp
    model.cls.predictions.decoder = _TiedDecoder(comp, model.cls.predictions.bias)
    return comp


@torch.no_grad()
def merge_compositional_embeddings(model: torch.nn.Module) -> torch.nn.Embedding:
    """Replace a :class:`CompositionalKmerEmbedding` by a plain tied ``nn.Embedding`` holding ``W``.

    The model computes exactly what it computed before (same logits), and its state dict has
    the standard ``BertForMaskedLM`` keys again.
    """
    comp = model.bert.embeddings.word_embeddings
    if not isinstance(comp, CompositionalKmerEmbedding):
        msg = "The model's word embeddings are not compositional; nothing to merge."
        raise TypeError(msg)
    weight = comp.weight.detach()
    plain = torch.nn.Embedding(*weight.shape, padding_idx=comp.padding_idx).to(weight.device)
    plain.weight.copy_(weight)
    decoder = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
    decoder.weight = plain.weight  # tied, as BertForMaskedLM ties them
    decoder.bias = model.cls.predictions.bias
    model.bert.embeddings.word_embeddings = plain
    model.cls.predictions.decoder = decoder
    return plain
