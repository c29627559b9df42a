"""Sequence-classification tasks on real DNA, and a k-mer baseline to compare DNABERT against.

Every builder is a pure function returning a :class:`pandas.DataFrame` with columns
``sequence`` (upper-case ``ACGTN``), ``label`` (int), ``split`` (``"train"``, ``"valid"``,
``"test"``) and provenance columns saying where each window comes from. Splits are drawn by
*source* (a dm3 upstream region, a 50 kb block of ce2 chrX, a gene locus), never by window, so no
sequence is shared between splits. The same ``random_state`` gives the same region and block
splits in every builder.

Tasks follow DNABERT's fine-tuning benchmarks (Ji et al., *DNABERT: pre-trained Bidirectional
Encoder Representations from Transformers model for DNA-language in genome*, Bioinformatics
37:2112-2120, 2021) on data that ships with omicformer (:mod:`omicformer.datasets`).
"""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = [
    "classification_metrics",
    "hnf4a_real_check",
    "kmer_baseline",
    "promoter_task",
    "splice_site_task",
    "tfbs_task",
]

SPLITS = ("train", "valid", "test")
SPLICE_LABELS = {"none": 0, "donor": 1, "acceptor": 2}
_BLOCK = 50_000  # ce2 background is split by blocks of this many bp
_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")
_CODE = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate("ACGT"):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


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
    ce2 windows are split by 50 kb blocks. Windows containing ``N`` are dropped.

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
        Share of ce2 windows among the negatives when ``gc_matched=False``.
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
            frames.append(cand.iloc[np.sort(rng.choice(len(cand), n_distal, replace=False))])
            frames.append(bg.iloc[np.sort(rng.choice(len(bg), n_pos - n_distal, replace=False))])
        return _finish(frames, rng)

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
    return _finish(frames, rng)


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
    hits = info[(info["base_id"] == motif) | (info["name"].str.upper() == str(motif).upper())]
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
        name (``"HNF4A"``) of a motif in :func:`omicformer.datasets.jaspar_motifs`, or a
        ``(4, width)`` count/probability array with rows A, C, G, T.
    length
        Window length (default 101 bp, as in DNABERT's ChIP-seq TFBS task; 96 6-mers).
    n_per_class
        Positives and negatives each, over all splits (split by source in ``split_fractions``).
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
    for split, frac in zip(SPLITS, fractions, strict=True):
        n = round(frac * n_per_class)
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
    fractions = _check_fractions(split_fractions)
    windows = _background_windows(background, length, random_state, fractions)
    pool = windows[windows["split"] == "test"]
    rng = _rng(random_state, 5)
    take = pool.iloc[rng.choice(len(pool), 2 * len(sites), replace=False)]
    pos = _plant(take.iloc[: len(sites)], sites, rng, random_strand=False).assign(label=1)
    neg = take.iloc[len(sites) :].assign(label=0, site="", site_offset=-1, site_strand="")
    frames = [f.assign(split="test", source=f"{background}_background") for f in (pos, neg)]
    return _finish(frames, rng).assign(motif="HNF4alpha_real")


_ATTR = re.compile(r'(gene_id|transcript_id) "([^"]*)"')


def _read_gtf_exons(gtf: str | Path, chroms: set[str] | None) -> dict[str, dict]:
    """Exons per transcript from a GTF (plain or gzipped): 0-based half-open intervals."""
    path = Path(gtf)
    opener = gzip.open if path.suffix == ".gz" else open
    tx: dict[str, dict] = {}
    with opener(path, "rt") as fh:
        for n, line in enumerate(fh, 1):
            if line.startswith("#") or not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 9:
                msg = (
                    f"{path}: line {n} has {len(fields)} tab-separated fields, a GTF line needs 9."
                )
                raise ValueError(msg)
            if fields[2] != "exon" or (chroms is not None and fields[0] not in chroms):
                continue
            attrs = dict(_ATTR.findall(fields[8]))
            if "transcript_id" not in attrs or fields[6] not in "+-":
                continue
            t = tx.setdefault(
                attrs["transcript_id"],
                {
                    "chrom": fields[0],
                    "strand": fields[6],
                    "gene": attrs.get("gene_id", ""),
                    "exons": [],
                },
            )
            t["exons"].append((int(fields[3]) - 1, int(fields[4])))
    return tx


def _clusters(spans: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
    """Map each (chrom, start, end) span to the id of its overlap cluster ``chrom:start-end``."""
    out, members, cur = {}, [], None
    for span in [*sorted(set(spans)), None]:
        if span is not None and cur is not None and span[0] == cur[0] and span[1] < cur[2]:
            cur = (cur[0], cur[1], max(cur[2], span[2]))
            members.append(span)
            continue
        for m in members:
            out[m] = f"{cur[0]}:{cur[1]}-{cur[2]}"
        cur, members = span, [span]
    return out


def splice_site_task(
    gtf: str | Path,
    fasta: str | Path,
    *,
    window: int = 400,
    negatives_per_site: float = 1.0,
    chroms: Sequence[str] | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Splice donor / acceptor / non-site windows from a gene annotation and its genome.

    Every intron of every multi-exon transcript gives a donor (exon end -> intron start) and an
    acceptor (intron end -> exon start); sites shared by several transcripts appear once. A
    window of ``window`` bp is centred on the exon-intron boundary and read in the transcript's
    orientation (reverse complement on ``-``), so in every row the boundary lies between
    offsets ``window // 2 - 1`` and ``window // 2``: a canonical donor reads ``GT`` at offsets
    ``[w/2, w/2 + 2)``, a canonical acceptor ``AG`` at ``[w/2 - 2, w/2)``. Negatives are
    windows placed the same way on ``GT`` (donor decoys) and ``AG`` (acceptor decoys) on the
    same strand inside the same genes that are not annotated boundaries; per locus, strand and
    site type, ``negatives_per_site`` times as many decoys as sites are drawn (fewer if not
    available). Genes overlapping on either strand form one locus; loci are split into
    train/valid/test. Windows running past a contig end are skipped.

    Parameters
    ----------
    gtf
        GTF (optionally ``.gz``) with ``exon`` lines carrying ``gene_id`` and ``transcript_id``.
    fasta
        The genome FASTA, indexed (or indexable) by :mod:`pyfaidx`; soft-masked bases are
        upper-cased.
    window
        Even window length; the default 400 gives 395 6-mers + 2 special tokens for DNABERT-6.
    negatives_per_site
        Decoys drawn per annotated site (per locus, strand and site type).
    chroms
        Only use these chromosomes (default all in the GTF).
    split_fractions, random_state
        As in :func:`promoter_task`.

    Returns
    -------
    Data frame with ``sequence``, ``label`` (0 none, 1 donor, 2 acceptor), ``split``,
    ``source`` (``"annotated"`` / ``"decoy"``), ``group`` (locus), ``chrom``, ``start``,
    ``end``, ``strand`` (window, 0-based half-open), ``boundary`` (genomic position of the
    first base after the boundary on the + strand), ``site_type`` (``donor``, ``acceptor``,
    ``gt_decoy``, ``ag_decoy``), ``dinucleotide``, ``gene_id`` and ``gc``.

    Examples
    --------
    On GENCODE (human GRCh38; about 400,000 unique sites genome-wide, so start with a few
    chromosomes)::

        from omicformer.dnabert.tasks import splice_site_task

        df = splice_site_task(
            "gencode.v44.basic.annotation.gtf.gz",  # from https://www.gencodegenes.org
            "GRCh38.primary_assembly.genome.fa",  # same release; pyfaidx writes a .fai next to it
            chroms=["chr19", "chr20", "chr21", "chr22"],
        )
    """
    import pyfaidx

    if window < 8 or window % 2:
        msg = f"window must be an even number >= 8, got {window}."
        raise ValueError(msg)
    fractions = _check_fractions(split_fractions)
    half = window // 2
    tx = _read_gtf_exons(gtf, set(chroms) if chroms is not None else None)
    if not tx:
        msg = f"No exon lines with transcript_id found in {gtf}" + (
            f" on {list(chroms)}." if chroms else "."
        )
        raise ValueError(msg)
    genome = pyfaidx.Fasta(str(fasta), as_raw=True, sequence_always_upper=True)
    missing = sorted({t["chrom"] for t in tx.values()} - set(genome.keys()))
    if missing:
        msg = f"Chromosomes {missing[:5]} of the GTF are not in {fasta} (it has {list(genome.keys())[:5]}...)."
        raise ValueError(msg)

    sites: dict[tuple[str, str, int], tuple[str, str]] = {}  # (chrom, strand, g) -> (type, gene)
    gene_span: dict[tuple[str, str, str], list[int]] = {}
    for t in tx.values():
        exons = sorted(t["exons"])
        key = (t["chrom"], t["strand"], t["gene"])
        span = gene_span.setdefault(key, [exons[0][0], exons[-1][1]])
        span[0], span[1] = min(span[0], exons[0][0]), max(span[1], exons[-1][1])
        for (_, a), (b, _) in itertools.pairwise(exons):
            if b <= a:
                continue
            donor, acceptor = (a, b) if t["strand"] == "+" else (b, a)
            sites.setdefault((t["chrom"], t["strand"], donor), ("donor", t["gene"]))
            sites.setdefault((t["chrom"], t["strand"], acceptor), ("acceptor", t["gene"]))
    locus_of = _clusters([(c, s, e) for (c, _, _), (s, e) in gene_span.items()])
    gene_locus = {k: locus_of[(k[0], s, e)] for k, (s, e) in gene_span.items()}
    split_of = _group_splits(gene_locus.values(), fractions, _rng(random_state, 6))
    rng = _rng(random_state, 7)

    def row(chrom, strand, g, site_type, gene, source) -> dict | None:
        lo, hi = g - half, g + half
        if lo < 0 or hi > len(genome[chrom]):
            return None
        seq = genome[chrom][lo:hi]
        seq = seq if strand == "+" else _revcomp(seq)
        di = seq[half : half + 2] if site_type in ("donor", "gt_decoy") else seq[half - 2 : half]
        locus = gene_locus[(chrom, strand, gene)]
        return {
            "sequence": seq,
            "label": SPLICE_LABELS.get(site_type, 0),
            "split": split_of[locus],
            "source": source,
            "group": locus,
            "chrom": chrom,
            "start": lo,
            "end": hi,
            "strand": strand,
            "boundary": g,
            "site_type": site_type,
            "dinucleotide": di,
            "gene_id": gene,
        }

    rows, by_gene = [], {}
    for (chrom, strand, g), (site_type, gene) in sorted(sites.items()):
        by_gene.setdefault((chrom, strand, gene), []).append((g, site_type))
        rows.append(row(chrom, strand, g, site_type, gene, "annotated"))
    # decoys: GT / AG on the same strand inside the gene, at no annotated boundary, each once
    taken = set(sites)
    patterns = {"+": {"gt_decoy": ("GT", 0), "ag_decoy": ("AG", -2)},
                "-": {"gt_decoy": ("AC", -2), "ag_decoy": ("CT", 0)}}  # fmt: skip
    for (chrom, strand, gene), gene_sites in sorted(by_gene.items()):
        s0, s1 = gene_span[(chrom, strand, gene)]
        body = genome[chrom][s0:s1]
        for site_type, decoy in (("donor", "gt_decoy"), ("acceptor", "ag_decoy")):
            n_sites = sum(t == site_type for _, t in gene_sites)
            dinuc, shift = patterns[strand][decoy]
            starts = (s0 + m.start() - shift for m in re.finditer(f"(?={dinuc})", body))
            cand = [g for g in starts if (chrom, strand, g) not in taken]
            n = min(round(negatives_per_site * n_sites), len(cand))
            for i in np.sort(rng.choice(len(cand), n, replace=False)):
                taken.add((chrom, strand, cand[i]))  # overlapping genes: never draw twice
                rows.append(row(chrom, strand, cand[i], decoy, gene, "decoy"))
    df = pd.DataFrame([r for r in rows if r is not None])
    if df.empty:
        msg = f"No splice-site window of {window} bp fits inside the contigs of {fasta}."
        raise ValueError(msg)
    df["gc"] = _gc(df["sequence"].tolist())
    return df


def _kmer_matrix(sequences: Sequence[str], k: int) -> csr_matrix:
    """Sparse (n, 4**k) matrix of k-mer frequencies (ACGT order; k-mers with N skipped)."""
    from scipy.sparse import csr_matrix

    powers = 4 ** np.arange(k - 1, -1, -1)
    indptr, indices, data = [0], [], []
    for seq in sequences:
        codes = _CODE[np.frombuffer(str(seq).encode("ascii"), dtype=np.uint8)]
        if len(codes) >= k:
            win = np.lib.stride_tricks.sliding_window_view(codes, k)
            idx = (win[(win >= 0).all(axis=1)] * powers).sum(axis=1)
            uniq, counts = np.unique(idx, return_counts=True)
            indices.append(uniq)
            data.append(counts / max(counts.sum(), 1))
            indptr.append(indptr[-1] + len(uniq))
        else:
            indptr.append(indptr[-1])
    data = np.concatenate(data) if data else np.zeros(0)
    indices = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    return csr_matrix((data, indices, indptr), shape=(len(sequences), 4**k))


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "The k-mer baseline and metrics need scikit-learn: pip install scikit-learn"
        raise ImportError(msg) from err


def _choose_c(x, y, groups, max_iter: int) -> float:
    """C in ``10**-5 .. 10**0`` with the best 3-fold log-loss (folds grouped when possible)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    if groups is not None and pd.Series(groups).nunique() >= 3:
        folds = GroupKFold(3).split(x, y, groups=groups)
    else:
        folds = StratifiedKFold(3, shuffle=True, random_state=0).split(x, y)
    grid = np.logspace(-5, 0, 6)
    loss = np.zeros(len(grid))
    for train, held in folds:
        scaler = StandardScaler(with_mean=False).fit(x[train])
        xt, xh = scaler.transform(x[train]), scaler.transform(x[held])
        model = LogisticRegression(max_iter=max_iter, warm_start=True)
        for i, c in enumerate(grid):  # increasing C: each fit starts from the previous one
            model.set_params(C=c).fit(xt, y[train])
            loss[i] += log_loss(y[held], model.predict_proba(xh), labels=model.classes_)
    return float(grid[int(np.argmin(loss))])


def kmer_baseline(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    k: int = 6,
    *,
    C: float | None = None,
    max_iter: int = 2000,
) -> np.ndarray:
    """k-mer-count logistic regression: the classic baseline for DNA sequence classifiers.

    Each sequence becomes its normalised k-mer frequency vector (``4**k`` features, k-mers with
    ``N`` skipped); features are scaled to unit variance on the training set and fed to an
    L2-regularised :class:`sklearn.linear_model.LogisticRegression`. Only ``train_df`` is used
    for fitting and for choosing ``C``.

    Parameters
    ----------
    train_df, test_df
        Frames with ``sequence`` and (for ``train_df``) integer ``label`` columns, e.g. two
        splits of :func:`promoter_task`.
    k
        k-mer length (1-8).
    C
        Inverse regularisation strength. ``None`` (default) picks it from
        ``10**-5 ... 10**0`` by 3-fold cross-validated log-loss on ``train_df``, with folds
        grouped by its ``group`` column when present (so related windows share a fold).
    max_iter
        Solver iterations.

    Returns
    -------
    For two classes, the probability of the larger label (shape ``(n_test,)``); otherwise a
    ``(n_test, n_classes)`` matrix with columns in sorted label order.

    Examples
    --------
    >>> from omicformer.dnabert.tasks import promoter_task, kmer_baseline, classification_metrics
    >>> df = promoter_task()
    >>> prob = kmer_baseline(df[df.split == "train"], df[df.split == "test"], k=6)
    >>> classification_metrics(df[df.split == "test"].label, prob)["mcc"] > 0.4
    True
    """
    _require_sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 1 <= k <= 8:
        msg = f"k must be between 1 and 8 for the k-mer baseline, got {k}."
        raise ValueError(msg)
    y = np.asarray(train_df["label"])
    if len(np.unique(y)) < 2:
        msg = f"train_df needs at least two classes in 'label', got {np.unique(y).tolist()}."
        raise ValueError(msg)
    x = _kmer_matrix(train_df["sequence"].tolist(), k)
    groups = train_df["group"] if "group" in train_df else None
    C = _choose_c(x, y, groups, max_iter) if C is None else C
    clf = make_pipeline(StandardScaler(with_mean=False), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(x, y)
    prob = clf.predict_proba(_kmer_matrix(test_df["sequence"].tolist(), k))
    return prob[:, 1] if prob.shape[1] == 2 else prob


def classification_metrics(y_true, prob, *, threshold: float = 0.5) -> dict[str, float]:
    """MCC, F1, AUROC and accuracy, the metrics DNABERT reports.

    Parameters
    ----------
    y_true
        True integer labels.
    prob
        Binary: probability of the positive class, shape ``(n,)`` (or ``(n, 2)``).
        Multi-class: ``(n, n_classes)`` probabilities, columns in sorted label order; then
        predictions are the arg-max, F1 is macro-averaged and AUROC is one-vs-rest macro.
    threshold
        Decision threshold for the binary case.

    Returns
    -------
    Dict with ``mcc``, ``f1``, ``auroc``, ``accuracy`` and ``n``.

    Examples
    --------
    >>> classification_metrics([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.4])["auroc"]
    1.0
    """
    _require_sklearn()
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if len(p) != len(y):
        msg = f"prob has {len(p)} rows but y_true has {len(y)} labels."
        raise ValueError(msg)
    if p.ndim == 1:
        pred = (p >= threshold).astype(int)
        f1 = f1_score(y, pred)
        auroc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")
    else:
        classes = np.unique(y)
        pred = p.argmax(axis=1)
        f1 = f1_score(y, pred, average="macro")
        auroc = (
            roc_auc_score(y, p, multi_class="ovr", labels=np.arange(p.shape[1]))
            if len(classes) == p.shape[1]
            else float("nan")
        )
    return {
        "mcc": float(matthews_corrcoef(y, pred)),
        "f1": float(f1),
        "auroc": float(auroc),
        "accuracy": float(accuracy_score(y, pred)),
        "n": len(y),
    }
