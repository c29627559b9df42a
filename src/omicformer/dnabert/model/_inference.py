"""Batched inference over sequences of any length: overlapping windows, pooled per sequence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..._core._checks import check_int
from ..._core._device import inference_autocast, resolve_device
from ..._core._progress import progress as progress_bar
from .._kmers import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    check_sequences,
    reverse_complement,
    warn_without_known_kmer,
)
from .._kmers import tokenize as tokenize_batch
from .._windows import split_windows
from ..module import mean_pool
from ._inputs import max_window_bp

OUTPUTS = ("mean", "cls", "probs")


def default_overlap(window: int) -> int:
    """Default overlap of consecutive windows: a quarter of the window."""
    return window // 4


@torch.inference_mode()
def run_windows(
    module: torch.nn.Module,
    sequences: Sequence[str],
    k: int,
    *,
    output: str,
    names: Sequence[str] | None = None,
    window_overlap: int | None = None,
    reverse_complement_average: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    desc: str = "DNABERT",
) -> np.ndarray:
    """Per-sequence outputs of ``module`` pooled over overlapping windows (and both strands).

    ``output="mean"``: mean of the last hidden states over all real k-mers of all windows;
    ``"cls"``: mean over windows of the ``[CLS]`` state; ``"probs"``: mean over windows of the
    class probabilities. With ``reverse_complement_average`` the reverse complement's windows
    join the average with equal weight.
    """
    if output not in OUTPUTS:
        msg = f"output={output!r} must be one of {OUTPUTS}."
        raise ValueError(msg)
    batch_size = check_int("batch_size", batch_size)
    if not isinstance(reverse_complement_average, bool | np.bool_):  # "False" read as true
        msg = f"reverse_complement={reverse_complement_average!r} must be True or False."
        raise ValueError(msg)
    if window_overlap is not None:  # 10.7 bases was cut to 10 silently
        window_overlap = check_int(
            "window_overlap", window_overlap, minimum=0, hint="bases, or None for a quarter window"
        )
    check_sequences(sequences, k, names=names)
    warn_without_known_kmer(sequences, k, names)
    n = len(sequences)
    max_tokens = int(module.config.max_position_embeddings)
    window = max_window_bp(k, max_tokens)
    overlap = default_overlap(window) if window_overlap is None else window_overlap
    if overlap >= window:
        msg = f"window_overlap={overlap} must be smaller than the model's window of {window} bases."
        raise ValueError(msg)
    seqs = list(sequences)
    if reverse_complement_average:
        seqs += [reverse_complement(s) for s in sequences]
    windows, owner = split_windows(seqs, window, overlap)
    owner %= n
    order = np.argsort([-len(w) for w in windows], kind="stable")  # similar lengths together

    dev = resolve_device(device)
    home, was_training = next(module.parameters()).device, module.training
    module.eval().to(dev)
    width = module.config.num_labels if output == "probs" else module.config.hidden_size
    sums = np.zeros((n, width), dtype=np.float64)
    weights = np.zeros(n, dtype=np.float64)
    specials = (PAD_ID, CLS_ID, SEP_ID)
    starts = range(0, len(windows), batch_size)
    try:
        for start in progress_bar(starts, total=len(starts), desc=desc, disable=not progress):
            idx = order[start : start + batch_size]
            batch = tokenize_batch([windows[i] for i in idx], k, max_len=max_tokens, dtype=np.int16)
            input_ids = torch.from_numpy(batch["input_ids"]).to(dev).long()
            attention_mask = torch.from_numpy(batch["attention_mask"]).to(dev)
            with inference_autocast(dev):
                if output == "probs":
                    logits = module(input_ids=input_ids, attention_mask=attention_mask).logits
                    values, w = torch.softmax(logits.float(), dim=-1), torch.ones(len(idx))
                else:
                    hidden = module.bert(input_ids=input_ids, attention_mask=attention_mask)
                    hidden = hidden.last_hidden_state.float()  # (B, T, D)
                    if output == "cls":
                        values, w = hidden[:, 0], torch.ones(len(idx))
                    else:
                        values, w = mean_pool(hidden, input_ids, specials)
            np.add.at(sums, owner[idx], values.double().cpu().numpy())
            np.add.at(weights, owner[idx], w.double().cpu().numpy())
    finally:
        module.to(home).train(was_training)
    return (sums / weights[:, None]).astype(np.float32)
