"""Promoter task on D. melanogaster upstream regions vs distal and C. elegans background."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..._core._checks import check_int
from ._common import (
    SPLITS,
    _ce2_windows,
    _check_fractions,
    _dm3_regions,
    _dm3_window,
    _finish,
    _gc,
    _rng,
)


def promoter_task(
    length: int = 300,
    *,
    gc_matched: bool = False,
    background_fraction: float = 0.5,
    min_distal_tss_distance: int = 500,
    gc_bins: int = 20,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Promoter vs non-promoter windows from real *Drosophila* and *C. elegans* DNA.

    Positives (label 1, ``source="dm3_proximal"``) are the last ``length`` bp of each bundled
    dm3 upstream region, i.e. the sequence right before an annotated TSS (-``length``..-1).
    Negatives (label 0) are distal upstream windows of the same regions (``"dm3_distal"``,
    starting 2 kb upstream of the TSS) and windows of the bundled 4 Mb of *C. elegans* chrX
    (``"ce2_background"``). A region's proximal and distal windows share ``group`` and split;
    ce2 windows are split by 50 kb blocks. Windows containing ``N`` are dropped, and so is a
    window whose sequence an earlier split holds (a few bundled regions are copies of one
    another), with a window of the other label of its split, so that no sequence is in two
    splits and each stays balanced (train is never changed; with ``random_state=0`` validation
    loses 2 of 1,200 windows).

    Parameters
    ----------
    length
        Window length in bp (at most 1000, so proximal and distal windows never overlap). The
        default 300 gives 295 6-mers + ``[CLS]``/``[SEP]`` = 297 tokens for DNABERT-6 (limit
        512), the window length of DNABERT's Prom-300 task (which, unlike these data, also
        included 50 bp downstream of the TSS).
    gc_matched
        If ``False``, each split is balanced: as many negatives as positives, a share
        ``1 - background_fraction`` of them the first window of randomly chosen regions of that
        split, the rest ce2 windows. If ``True``, negatives are drawn from a larger pool (every
        non-overlapping window in the first 1 kb of each region, plus every ce2 window of the
        split) so that, per split and per GC bin, negatives equal positives in number; where a
        bin has too few candidate negatives, positives of that bin are subsampled instead. Use
        it to check that a model reads more than GC content.
    background_fraction
        Share of ce2 windows among the negatives when ``gc_matched=False``. It is a minimum:
        a split with fewer usable distal windows than it needs is made up with ce2 windows
        (with the defaults and ``background_fraction=0``, 101 of the 600 test negatives are
        ce2). Filter on ``source`` for same-genome negatives only.
    min_distal_tss_distance
        A distal window is used only if no other annotated TSS lies within this many bp of it
        (Drosophila genes are dense, and a "distal" window may be another gene's promoter).
    gc_bins
        Number of equal-width GC-fraction bins on [0, 1] used by ``gc_matched``.
    split_fractions
        Fractions of regions (and of ce2 blocks) in train, valid and test.
    random_state
        Seed for splits and sampling.

    Returns
    -------
    Data frame with columns ``sequence``, ``label``, ``split``, ``source``, ``group`` (the
    region or block that defines the split), ``chrom``, ``start``, ``end``, ``strand`` (window
    coordinates in dm3 or ce2, 0-based half-open; ``-`` means the sequence is the reverse
    complement) and ``gc``.

    Examples
    --------
    >>> from omicformer.dnabert.tasks import promoter_task, kmer_baseline, classification_metrics
    >>> df = promoter_task(gc_matched=True)
    >>> train, test = df[df.split == "train"], df[df.split == "test"]
    >>> metrics = classification_metrics(test.label, kmer_baseline(train, test))
    """
    length = check_int("length", length, hint="bases per window")
    gc_bins = check_int("gc_bins", gc_bins, hint="GC-content bins of the matching")
    if not 6 <= length <= 1000:
        msg = f"length must be between 6 and 1000 bp, got {length}."
        raise ValueError(msg)
    if not 0 <= background_fraction <= 1:
        msg = f"background_fraction must lie in [0, 1], got {background_fraction}."
        raise ValueError(msg)
    fractions = _check_fractions(split_fractions)
    regions = _dm3_regions(random_state, fractions)
    rng = _rng(random_state, 3)

    def distal_ok(region, offset: int) -> bool:
        lo, hi = offset - min_distal_tss_distance, offset + length + min_distal_tss_distance
        return not any(lo <= t < hi for t in region.other_tss)

    pos, distal = [], []
    distal_offsets = range(0, max(1000 - length, 0) + 1, length) if gc_matched else [0]
    for region in regions.itertuples():
        pos.append({**_dm3_window(region, 2000 - length, length), "split": region.split})
        for offset in distal_offsets:
            if distal_ok(region, offset):
                distal.append({**_dm3_window(region, offset, length), "split": region.split})
    pos = pd.DataFrame(pos).assign(label=1, source="dm3_proximal")
    distal = pd.DataFrame(distal).assign(label=0, source="dm3_distal")
    background = _ce2_windows(length, random_state, fractions).assign(
        label=0, source="ce2_background"
    )
    pos, distal = (d[~d["sequence"].str.contains("N")] for d in (pos, distal))

    frames = [pos]
    if not gc_matched:
        for split in SPLITS:
            n_pos = int((pos["split"] == split).sum())
            cand = distal[distal["split"] == split]
            n_distal = min(round(n_pos * (1 - background_fraction)), len(cand))
            bg = background[background["split"] == split]
            if len(bg) < n_pos - n_distal:
                msg = (
                    f"the {split} split needs {n_pos - n_distal} C. elegans windows of {length} "
                    f"bp but its blocks hold {len(bg)}: lower background_fraction (now "
                    f"{background_fraction}) or length."
                )
                raise ValueError(msg)
            frames.append(cand.iloc[np.sort(rng.choice(len(cand), n_distal, replace=False))])
            frames.append(bg.iloc[np.sort(rng.choice(len(bg), n_pos - n_distal, replace=False))])
        return _without_repeats(_finish(frames, rng))

    frames = []
    neg = pd.concat([distal, background], ignore_index=True)
    edges = np.linspace(0, 1, gc_bins + 1)[1:-1]
    pos_bin = np.digitize(_gc(pos["sequence"].tolist()), edges)
    neg_bin = np.digitize(_gc(neg["sequence"].tolist()), edges)
    for split in SPLITS:
        for b in range(gc_bins):
            p = np.flatnonzero((pos["split"].to_numpy() == split) & (pos_bin == b))
            n = np.flatnonzero((neg["split"].to_numpy() == split) & (neg_bin == b))
            m = min(len(p), len(n))
            frames.append(pos.iloc[np.sort(rng.choice(p, m, replace=False))])
            frames.append(neg.iloc[np.sort(rng.choice(n, m, replace=False))])
    return _without_repeats(_finish(frames, rng), np.linspace(0, 1, gc_bins + 1)[1:-1])


def _without_repeats(df: pd.DataFrame, gc_edges: np.ndarray | None = None) -> pd.DataFrame:
    """Drop windows whose sequence an earlier split holds, keeping each split balanced.

    The bundled regions never overlap, but a few are copies of one another (duplicated stretches
    of the fly genome: 12 share their last 300 bp with another region), so splitting by region
    can put one sequence into two splits (with ``random_state=0``, a positive in train and
    valid). Such a window leaves the later split (valid after train, test after both), with the
    last window of the other label in the split (and, with ``gc_edges``, in the same GC bin),
    so that labels stay paired. Train is never changed, nor a split without repeats.
    """
    seqs, labels = df["sequence"].to_numpy(), df["label"].to_numpy()
    gc_bin = np.digitize(df["gc"].to_numpy(), gc_edges) if gc_edges is not None else None
    keep = np.ones(len(df), dtype=bool)
    seen: set[str] = set()
    for split in SPLITS:
        rows = np.flatnonzero(df["split"].to_numpy() == split)
        for i in rows:
            if keep[i] and seqs[i] in seen:
                keep[i] = False
                other = rows[keep[rows] & (labels[rows] != labels[i])]
                if gc_bin is not None and (gc_bin[other] == gc_bin[i]).any():
                    other = other[gc_bin[other] == gc_bin[i]]
                if len(other):
                    keep[other[-1]] = False
        seen.update(seqs[rows[keep[rows]]])
    return df[keep].reset_index(drop=True)
