"""Overlapping windows of long sequences, each short enough for one BERT input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._core._checks import check_int
from ._kmers import _SINGLE_STRING


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows of ``window`` bases every ``stride`` bases covering ``length``.

    The last window is aligned to the end of the sequence so every base is covered; a sequence
    no longer than ``window`` gives a single window at 0.

    Parameters
    ----------
    length
        Sequence length in bases.
    window
        Window length in bases (an integer >= 1).
    stride
        Bases from one window start to the next (an integer >= 1).

    Returns
    -------
    ``int64`` array of start offsets, increasing.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.window_starts(1000, window=515, stride=400)
    array([  0, 400, 485])
    """
    window = check_int("window", window, hint="bases per window")
    stride = check_int("stride", stride, hint="bases from one window start to the next")
    if length <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - window + 1, stride, dtype=np.int64)
    if starts[-1] + window < length:
        starts = np.append(starts, length - window)
    return starts


def split_windows(
    sequences: Sequence[str], window: int, overlap: int = 0
) -> tuple[list[str], np.ndarray]:
    """Cut sequences longer than ``window`` bases into overlapping windows.

    Parameters
    ----------
    sequences
        DNA strings.
    window
        Window length in bases (for DNABERT at most ``510 + k - 1``).
    overlap
        Bases shared by consecutive windows (``0 <= overlap < window``). ``window`` and
        ``overlap`` must be integers (a float such as ``10.0`` is refused).

    Returns
    -------
    ``(windows, owner)``: the window strings and, for each, the index of its sequence.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.split_windows(["AAAACCCCGG"], window=6, overlap=2)
    (['AAAACC', 'CCCCGG'], array([0, 0]))
    """
    if isinstance(sequences, str):
        raise TypeError(_SINGLE_STRING)
    window = check_int("window", window, hint="bases per window")
    overlap = check_int("overlap", overlap, minimum=0, hint="bases shared by consecutive windows")
    if overlap >= window:
        msg = f"overlap={overlap} must satisfy 0 <= overlap < window ({window})."
        raise ValueError(msg)
    out: list[str] = []
    owner: list[int] = []
    for i, seq in enumerate(sequences):
        for s in window_starts(len(seq), window, window - overlap):
            out.append(seq[s : s + window])
            owner.append(i)
    return out, np.asarray(owner, dtype=np.int64)
