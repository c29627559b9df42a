"""Splice-site task from a GTF + FASTA (donor / acceptor / decoy windows)."""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._kmers import reverse_complement as _revcomp
from ._common import (
    SPLICE_LABELS,
    _check_fractions,
    _gc,
    _group_splits,
    _rng,
)

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
    chroms: str | Sequence[str] | None = None,
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
        Only use these chromosomes (default all in the GTF); a single name such as
        ``"chr19"`` is one chromosome.
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
    if isinstance(chroms, str):  # one chromosome, not its characters
        chroms = [chroms]
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
