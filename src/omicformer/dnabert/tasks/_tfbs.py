"""Motif-derived TF-binding-site task and the real HNF4alpha check."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..._core._checks import check_int
from .._kmers import reverse_complement as _revcomp
from ._common import (
    SPLITS,
    _ce2_windows,
    _check_fractions,
    _dm3_regions,
    _dm3_window,
    _finish,
    _rng,
    _split_sizes,
)


def _resolve_motif(motif) -> tuple[str, np.ndarray]:
    from omicformer.datasets import jaspar_motif_info, jaspar_motifs

    if isinstance(motif, np.ndarray):
        if motif.ndim != 2 or motif.shape[0] != 4 or (motif < 0).any():
            msg = f"A motif array must be a non-negative (4, width) PFM with rows A,C,G,T; got shape {motif.shape}."
            raise ValueError(msg)
        return "custom", motif.astype(float)
    motifs, info = jaspar_motifs(), jaspar_motif_info()
    if motif in motifs:
        return motif, motifs[motif]
    key = str(motif).upper()  # JASPAR ids are upper case: "ma0114.4" is MA0114.4
    same = [mid for mid in motifs if mid.upper() == key]
    if len(same) == 1:
        return same[0], motifs[same[0]]
    hits = info[(info["base_id"].str.upper() == key) | (info["name"].str.upper() == key)]
    if hits.empty:
        opts = ", ".join(f"{i} ({n})" for i, n in info["name"].items())
        msg = f"Unknown motif {motif!r}; bundled JASPAR motifs: {opts}. Or pass a (4, width) PFM array."
        raise ValueError(msg)
    mid = hits.sort_values("version").index[-1]
    return mid, motifs[mid]


def _background_windows(background: str, length: int, random_state, fractions) -> pd.DataFrame:
    if background == "ce2":
        return _ce2_windows(length, random_state, fractions)
    if background == "dm3":
        rows = []
        for region in _dm3_regions(random_state, fractions).itertuples():
            for offset in range(0, 2000 - length + 1, length):
                rows.append({**_dm3_window(region, offset, length), "split": region.split})
        df = pd.DataFrame(rows)
        return df[~df["sequence"].str.contains("N")].reset_index(drop=True)
    msg = f"background must be 'ce2' or 'dm3', got {background!r}."
    raise ValueError(msg)


def _plant(
    windows: pd.DataFrame, sites: list[str], rng: np.random.Generator, *, random_strand: bool = True
) -> pd.DataFrame:
    """Overwrite each window at a random offset with a site (in random orientation if asked)."""
    out = windows.copy()
    seqs, starts, strands, planted = [], [], [], []
    for seq, site in zip(out["sequence"], sites, strict=True):
        strand = "-" if random_strand and rng.random() < 0.5 else "+"
        site = site if strand == "+" else _revcomp(site)
        at = int(rng.integers(0, len(seq) - len(site) + 1))
        seqs.append(seq[:at] + site + seq[at + len(site) :])
        starts.append(at)
        strands.append(strand)
        planted.append(site)
    out["sequence"] = seqs
    return out.assign(site=planted, site_offset=starts, site_strand=strands)


def tfbs_task(
    motif: str | np.ndarray = "MA0114",
    *,
    length: int = 101,
    n_per_class: int = 5000,
    background: str = "ce2",
    pseudocount: float = 1.0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Transcription-factor binding-site task with **motif-derived** labels on real background.

    Real background windows (ce2 chrX or dm3 upstream regions) are drawn without replacement;
    half of them get one site sampled from the motif's position frequency matrix (each position
    drawn independently from its column, random orientation, random offset) written over the
    background bases (label 1), the other half are left as they are (label 0). The labels are
    therefore synthetic: they say where a PFM sample was planted, not where a TF binds in vivo,
    and unplanted windows may contain motif-like sequence by chance. For a small check on real
    sites see :func:`hnf4a_real_check`.

    Parameters
    ----------
    motif
        JASPAR matrix id (``"MA0114.5"``), base id (``"MA0114"``, latest bundled version) or TF
        name (``"HNF4A"``) of a motif in :func:`omicformer.datasets.jaspar_motifs`, in any
        case (``"ma0114"``), or a ``(4, width)`` count/probability array with rows A, C, G, T.
        An unknown motif is a ``ValueError`` listing the bundled ones.
    length
        Window length (default 101 bp, as in DNABERT's ChIP-seq TFBS task; 96 6-mers).
    n_per_class
        Positives and negatives each, over all splits (split by source in ``split_fractions``;
        the split sizes sum to ``n_per_class``, rounded by largest remainder, so a very small
        ``n_per_class`` can leave a split empty). At least 1.
    background
        ``"ce2"`` (bundled *C. elegans* chrX, split by 50 kb blocks) or ``"dm3"`` (tiled windows
        of the bundled *Drosophila* upstream regions, split by region).
    pseudocount
        Added per column, spread evenly over the four bases, before normalising counts.
    split_fractions, random_state
        As in :func:`promoter_task`.

    Returns
    -------
    Data frame with ``sequence``, ``label``, ``split``, ``source``, ``group``, ``chrom``,
    ``start``, ``end``, ``strand``, ``motif``, ``site`` (planted site as written, else empty),
    ``site_offset`` (0-based, ``-1`` if none), ``site_strand`` and ``gc``.

    Examples
    --------
    >>> from omicformer.dnabert.tasks import tfbs_task
    >>> df = tfbs_task("CTCF", n_per_class=1000)
    >>> df.label.value_counts().tolist()
    [1000, 1000]
    """
    n_per_class = check_int("n_per_class", n_per_class)
    length = check_int("length", length, hint="window length in bases")
    mid, pfm = _resolve_motif(motif)
    if length < pfm.shape[1]:
        msg = f"length={length} is shorter than motif {mid} ({pfm.shape[1]} bp)."
        raise ValueError(msg)
    fractions = _check_fractions(split_fractions)
    windows = _background_windows(background, length, random_state, fractions)
    rng = _rng(random_state, 4)
    prob = (pfm + pseudocount / 4) / (pfm.sum(axis=0) + pseudocount)
    bases = np.array(list("ACGT"))
    frames = []
    for split, n in zip(SPLITS, _split_sizes(n_per_class, fractions), strict=True):
        pool = windows[windows["split"] == split]
        if 2 * n > len(pool):
            msg = f"Only {len(pool)} {background} windows in split {split!r}; lower n_per_class or length."
            raise ValueError(msg)
        take = pool.iloc[rng.choice(len(pool), 2 * n, replace=False)]
        draws = (rng.random((n, 1, pfm.shape[1])) > prob.cumsum(axis=0)[None]).sum(axis=1)
        sites = ["".join(bases[np.minimum(row, 3)]) for row in draws]
        frames.append(_plant(take.iloc[:n], sites, rng).assign(label=1))
        frames.append(take.iloc[n:].assign(label=0, site="", site_offset=-1, site_strand=""))
    frames = [f.assign(source=f"{background}_background") for f in frames]
    return _finish(frames, rng).assign(motif=mid)


def hnf4a_real_check(
    length: int = 101,
    *,
    background: str = "ce2",
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """The 71 real HNF4alpha sites of Biostrings embedded in real background, vs background only.

    A small real-sequence check for a model trained on ``tfbs_task("MA0114")``: each site of
    :func:`omicformer.datasets.hnf4a_sites` is written as given (no reverse complement) at a
    random offset into its own background window (label 1); 71 further windows stay unchanged
    (label 0). Windows come from the *test* blocks/regions of :func:`tfbs_task` with the same
    ``background``, ``split_fractions`` and ``random_state``, so a model trained on that task's
    train split has never seen them. All rows have ``split="test"``.

    Parameters
    ----------
    length
        Window length in bases, at least 13 (the length of the sites).
    background, split_fractions, random_state
        As in :func:`tfbs_task`.

    Returns
    -------
    142 rows with the columns of :func:`tfbs_task` (``motif="HNF4alpha_real"``).

    Examples
    --------
    >>> from omicformer.dnabert.tasks import hnf4a_real_check
    >>> int(hnf4a_real_check().label.sum())
    71
    """
    from omicformer.datasets import hnf4a_sites

    sites = hnf4a_sites()
    longest = max(len(site) for site in sites)  # 13 bp
    length = check_int(
        "length", length, minimum=longest, hint=f"a window holds a {longest} bp site"
    )
    fractions = _check_fractions(split_fractions)
    windows = _background_windows(background, length, random_state, fractions)
    pool = windows[windows["split"] == "test"]
    if len(pool) < 2 * len(sites):
        msg = (
            f"the test blocks hold {len(pool)} background windows of {length} bp, and the check "
            f"needs {2 * len(sites)} (a site's window and an unchanged one per site): lower "
            "length or raise the test share of split_fractions."
        )
        raise ValueError(msg)
    rng = _rng(random_state, 5)
    take = pool.iloc[rng.choice(len(pool), 2 * len(sites), replace=False)]
    pos = _plant(take.iloc[: len(sites)], sites, rng, random_strand=False).assign(label=1)
    neg = take.iloc[len(sites) :].assign(label=0, site="", site_offset=-1, site_strand="")
    frames = [f.assign(split="test", source=f"{background}_background") for f in (pos, neg)]
    return _finish(frames, rng).assign(motif="HNF4alpha_real")
