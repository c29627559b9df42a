"""Shared helpers of the task builders: seeded generators, group splits, GC, windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "valid", "test")
SPLICE_LABELS = {"none": 0, "donor": 1, "acceptor": 2}
_BLOCK = 50_000  # ce2 background is split by blocks of this many bp
_CODE = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate("ACGT"):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


def _rng(random_state: int | None, stream: int) -> np.random.Generator:
    """Independent generator per purpose, so e.g. region splits agree across builders."""
    seed = np.random.SeedSequence().entropy if random_state is None else random_state
    return np.random.default_rng([int(seed), stream])


def _check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in split_fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
        msg = f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions!r}."
        raise ValueError(msg)
    return fr


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """``n`` items shared out in proportion to ``fractions``, summing to ``n``.

    Largest remainders: each split gets the floor of its share, and the items left over go one
    each to the splits with the largest fractional parts (earlier split first on ties).
    """
    fr = np.asarray(fractions, dtype=float)
    exact = fr / fr.sum() * n
    sizes = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - int(sizes.sum())]] += 1
    return [int(x) for x in sizes]


def _group_splits(groups: Sequence[str], fractions, rng: np.random.Generator) -> dict[str, str]:
    """Assign whole groups to train/valid/test in the given proportions."""
    groups = sorted(set(groups))
    order = rng.permutation(len(groups))
    n_train = round(fractions[0] * len(groups))
    n_valid = round(fractions[1] * len(groups))
    out = {}
    for rank, i in enumerate(order):
        out[groups[i]] = (
            "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
        )
    return out


def _gc(seqs: Sequence[str]) -> np.ndarray:
    """G+C fraction among the A/C/G/T bases of each sequence (N ignored)."""
    out = np.empty(len(seqs))
    for i, s in enumerate(seqs):
        gc = s.count("G") + s.count("C")
        at = s.count("A") + s.count("T")
        out[i] = gc / max(gc + at, 1)
    return out


def _dm3_regions(random_state, fractions) -> pd.DataFrame:
    from omicformer.datasets import dm3_upstream

    df = dm3_upstream()
    df["split"] = df["name"].map(_group_splits(df["name"], fractions, _rng(random_state, 1)))
    return df


def _dm3_window(region, offset: int, length: int) -> dict:
    """Window ``[offset, offset + length)`` of an oriented dm3 region, with dm3 coordinates."""
    if region.strand == "+":
        start = region.start + offset
    else:
        start = region.end - offset - length
    return {
        "sequence": region.sequence[offset : offset + length],
        "group": f"dm3:{region.name}",
        "chrom": region.chrom,
        "start": start,
        "end": start + length,
        "strand": region.strand,
    }


def _ce2_windows(length: int, random_state, fractions) -> pd.DataFrame:
    """All non-overlapping ``length``-bp windows of the bundled ce2 chrX, tiled per 50 kb block."""
    from omicformer.datasets import ce_chrx_sequence

    seq = ce_chrx_sequence()
    blocks = [f"ce2:chrX:{b}-{min(b + _BLOCK, len(seq))}" for b in range(0, len(seq), _BLOCK)]
    split_of = _group_splits(blocks, fractions, _rng(random_state, 2))
    rows = []
    for block in blocks:
        b0, b1 = (int(x) for x in block.rsplit(":", 1)[1].split("-"))
        for start in range(b0, b1 - length + 1, length):
            rows.append(("chrX", start, start + length, "+", block, split_of[block]))
    df = pd.DataFrame(rows, columns=["chrom", "start", "end", "strand", "group", "split"])
    df["sequence"] = [seq[s:e] for s, e in zip(df["start"], df["end"], strict=True)]
    return df


def _finish(frames: list[pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    df["gc"] = _gc(df["sequence"].tolist())
    first = ["sequence", "label", "split", "source", "group"]
    return df[first + [c for c in df.columns if c not in first]]
