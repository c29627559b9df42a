"""Contiguous span masking for DNABERT pretraining (official ``run_pretrain.py::mask_tokens``).

With overlapping k-mers a single masked token is trivially recovered from its neighbours, which
together spell out all its bases. DNABERT therefore draws *centres* with probability
``mlm_probability`` and masks the whole span of k tokens around each centre
(:data:`MASK_LIST` offsets), clipped to the real k-mers ``[1, last k-mer]``. Every masked
k-mer then contains at least one base that no unmasked k-mer shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._kmers import CLS_ID, MASK_ID, PAD_ID, SEP_ID

# offsets around a centre, exactly as official DNABERT (centre + offsets = k contiguous tokens)
MASK_LIST: dict[int, tuple[int, ...]] = {
    3: (-1, 1),
    4: (-1, 1, 2),
    5: (-2, -1, 1, 2),
    6: (-2, -1, 1, 2, 3),
}
# official DNABERT never draws centres on [CLS]/[SEP] (special-tokens mask) or [PAD]
DEFAULT_EXCLUDE_IDS: tuple[int, ...] = (PAD_ID, CLS_ID, SEP_ID)


def span_mask_positions(
    input_ids: torch.Tensor,
    k: int,
    *,
    mlm_probability: float = 0.15,
    exclude_ids: Sequence[int] = DEFAULT_EXCLUDE_IDS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean ``(B, T)`` mask of positions to predict: Bernoulli centres expanded to k-spans.

    Equal to the official per-row loop: for each centre ``c`` and offset ``o`` in
    ``MASK_LIST[k]``, ``c + o`` is masked when ``1 <= c + o <= end``, where ``end`` is the
    last position eligible as a centre (the last real k-mer).
    """
    if k not in MASK_LIST:
        msg = f"k={k!r} is not supported; DNABERT span masking is defined for k = 3, 4, 5, 6."
        raise ValueError(msg)
    eligible = ~torch.isin(input_ids, torch.as_tensor(list(exclude_ids), device=input_ids.device))
    probability = torch.full(input_ids.shape, float(mlm_probability), device=input_ids.device)
    probability.masked_fill_(~eligible, 0.0)
    centres = torch.bernoulli(probability, generator=generator).bool()  # (B, T)

    T = input_ids.shape[1]
    pos = torch.arange(T, device=input_ids.device)
    end = torch.where(eligible, pos, torch.full_like(pos, -1)).amax(dim=1, keepdim=True)  # (B, 1)
    inside = (pos >= 1) & (pos <= end)  # (B, T)
    masked = centres.clone()
    for o in MASK_LIST[k]:
        if abs(o) >= T:
            continue
        shifted = torch.zeros_like(centres)
        if o > 0:
            shifted[:, o:] = centres[:, : T - o]
        else:
            shifted[:, : T + o] = centres[:, -o:]
        masked |= shifted & inside
    return masked


def span_mask_tokens(
    input_ids: torch.Tensor,
    k: int,
    vocab_size: int,
    *,
    mlm_probability: float = 0.15,
    exclude_ids: Sequence[int] = DEFAULT_EXCLUDE_IDS,
    mask_id: int = MASK_ID,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch of token ids for DNABERT masked-language-model pretraining.

    Parameters
    ----------
    input_ids
        ``(B, T)`` token ids ``[CLS] k-mers [SEP] [PAD]...`` (CPU tensor when ``generator`` is
        a CPU generator).
    k
        k-mer size (3..6); spans are k tokens long.
    vocab_size
        Size of the vocabulary; random replacements are drawn over all of it (specials
        included), as in the official code.
    mlm_probability
        Probability that a real k-mer is a span centre (official default 0.15).
    exclude_ids
        Token ids never drawn as centres. Official DNABERT: ``[PAD] [CLS] [SEP]``; ``[UNK]``
        k-mers (with N) are ordinary positions there too. Add ``1`` to exclude them.
    mask_id
        Id of ``[MASK]``.
    generator
        Torch generator for reproducible masks (draw order as in the official code).

    Returns
    -------
    ``(inputs, labels)``: masked positions get ``[MASK]`` (80%), a random token (10%) or stay
    unchanged (10%); ``labels`` holds the original id there and ``-100`` elsewhere.

    Examples
    --------
    >>> import torch
    >>> from omicformer.dnabert import pp
    >>> from omicformer.dnabert.module import span_mask_tokens
    >>> ids = torch.as_tensor(pp.tokenize(["ACGTACGTACGTACGTAC"], k=3)["input_ids"])
    >>> g = torch.Generator().manual_seed(0)
    >>> inputs, labels = span_mask_tokens(ids, k=3, vocab_size=69, generator=g)

    References
    ----------
    Ji Y, Zhou Z, Liu H, Davuluri RV (2021). DNABERT: pre-trained Bidirectional Encoder
    Representations from Transformers model for DNA-language in genome. Bioinformatics 37(15).
    """
    masked = span_mask_positions(
        input_ids, k, mlm_probability=mlm_probability, exclude_ids=exclude_ids, generator=generator
    )
    labels = input_ids.clone()
    labels[~masked] = -100
    inputs = input_ids.clone()
    shape, device = input_ids.shape, input_ids.device
    replaced = torch.bernoulli(torch.full(shape, 0.8, device=device), generator=generator).bool()
    replaced &= masked
    inputs[replaced] = mask_id
    randomised = torch.bernoulli(torch.full(shape, 0.5, device=device), generator=generator).bool()
    randomised &= masked & ~replaced
    random_words = torch.randint(
        vocab_size, shape, dtype=input_ids.dtype, device=device, generator=generator
    )
    inputs[randomised] = random_words[randomised]
    return inputs, labels
