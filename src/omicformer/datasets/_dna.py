"""Real DNA sequence data bundled with omicformer (built by ``scripts/build_dna_datasets.py``).

Every loader reads files under ``omicformer/datasets/data/`` and needs no network access.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .._core._cache import cache_root

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "ce_chrx_fasta_path",
    "ce_chrx_sequence",
    "dm3_upstream",
    "hnf4a_sites",
    "jaspar_motif_info",
    "jaspar_motifs",
]

_DATA = Path(__file__).parent / "data"
CE_FASTA = _DATA / "dna_ce2_chrX_0-4000000.fa.gz"
CE_LENGTH = 4_000_000
DM3_FASTA = _DATA / "dna_dm3_upstream2000_subset.fa.gz"
HNF4A_TXT = _DATA / "dna_hnf4alpha_sites.txt"
JASPAR_JSON = _DATA / "dna_jaspar2024_motifs.json"


def _cache_dir() -> Path:
    """``$OMICFORMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/omicformer``, else ``~/.cache/omicformer``."""
    return cache_root()


def ce_chrx_fasta_path(*, compressed: bool = False) -> Path:
    """Path to a FASTA file of the first 4 Mb of *C. elegans* chromosome X (UCSC ce2).

    The record is named ``chrX`` and holds ce2 chrX bases ``[0, 4_000_000)`` (0-based,
    half-open; ``chrX:1-4,000,000`` 1-based), so its coordinates equal ce2 coordinates. The
    piece is upper case (the source carries no soft-masking) and has no ``N``. It serves as
    pretraining text and as real background DNA for the promoter and TF-binding tasks.

    Parameters
    ----------
    compressed
        If ``False`` (default), return a plain FASTA decompressed once into the user cache
        (``$OMICFORMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/omicformer``, else
        ``~/.cache/omicformer``; about 4 MB), which any FASTA
        reader accepts and where :mod:`pyfaidx` may write its index. If ``True``, return the
        packaged BGZF file itself; its ``.fai`` and ``.gzi`` indexes are shipped next to it, so
        ``pyfaidx.Fasta(path, rebuild=False)`` opens it in place (pass ``rebuild=False``: file
        times inside an installed package are arbitrary and pyfaidx would otherwise try to
        rewrite the index).

    Returns
    -------
    Path to the FASTA file.

    Notes
    -----
    Origin: ``BSgenome/extdata/ce2chrX.fa.gz`` of the Debian package ``r-bioc-bsgenome``
    1.66.3 (Bioconductor BSgenome, Artistic-2.0; sequence from UCSC ce2 / WormBase WS170).
    Size: 4,000,000 bp, 1.2 MB compressed. Cite: H. Pagès, *BSgenome: Software infrastructure
    for efficient representation of full genomes and their SNPs*, Bioconductor; C. elegans
    Sequencing Consortium, *Science* 282:2012-2018 (1998).

    Examples
    --------
    >>> import pyfaidx
    >>> from omicformer import datasets
    >>> fa = pyfaidx.Fasta(str(datasets.ce_chrx_fasta_path()))
    >>> str(fa["chrX"][0:12])
    'CTAAGCCTAAGC'
    """
    if compressed:
        return CE_FASTA
    target = _cache_dir() / "dna_ce2_chrX_0-4000000.fa"
    if not target.exists() or target.stat().st_size < CE_LENGTH:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with gzip.open(CE_FASTA, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(tmp, target)  # atomic: concurrent callers never see a partial file
    return target


@functools.lru_cache(maxsize=1)
def ce_chrx_sequence() -> str:
    """The bundled 4 Mb of *C. elegans* ce2 chrX as one upper-case string.

    Same bases as :func:`ce_chrx_fasta_path` (ce2 chrX ``[0, 4_000_000)``, 0-based half-open,
    Artistic-2.0, from Debian ``r-bioc-bsgenome``), read without :mod:`pyfaidx`; cached after
    the first call.

    Returns
    -------
    A string of length 4,000,000 over ``ACGT``.

    Examples
    --------
    >>> from omicformer import datasets
    >>> seq = datasets.ce_chrx_sequence()
    >>> len(seq), seq[:12]
    (4000000, 'CTAAGCCTAAGC')
    """
    with gzip.open(CE_FASTA, "rt") as fh:
        fh.readline()
        return fh.read().replace("\n", "")


_DM3_HEADER = re.compile(r"^>(\S+) (\S+):(\d+)-(\d+)\(([+-])\) transcripts=(\S*) other_tss=(\S*)$")


def dm3_upstream() -> pd.DataFrame:
    """6,000 real *D. melanogaster* 2 kb promoter-upstream regions (dm3, RefSeq).

    Each sequence is the 2,000 bp immediately upstream of an annotated RefSeq transcription
    start site, in the transcript's orientation (reverse-complemented for ``-`` strand
    transcripts), so its last base abuts the TSS. A TATA box peak at 28-32 bp before the 3' end
    on both strands confirms the orientation.

    Returns
    -------
    Data frame with one row per region and columns

    ``name``
        Unique region name: the original UCSC record name of the region's first transcript,
        e.g. ``NM_078863_up_2000_chr2L_16764737_f`` (RefSeq id, 1-based start, strand
        ``f``/``r``). A few RefSeq ids map to several loci, so ids alone are not unique.
    ``chrom``, ``start``, ``end``, ``strand``
        dm3 coordinates, 0-based half-open; ``end - start == 2000``.
    ``transcripts``
        Tuple of all RefSeq transcripts sharing this exact region (same TSS).
    ``other_tss``
        Tuple of other annotated TSSs (any transcript, either strand) within 1 kb of the region,
        as offsets in the sequence's 5'->3' coordinates (the region's own TSS is offset 2000).
        Use it to keep "distal" windows away from other genes' promoters.
    ``sequence``
        Upper-case ``ACGTN`` string of length 2000.

    Notes
    -----
    Origin: ``Biostrings/extdata/dm3_upstream2000.fa.gz`` in Debian ``r-bioc-biostrings``
    2.66.0 (Bioconductor Biostrings, Artistic-2.0; sequences from UCSC dm3 ``upstream2000``),
    26,454 records. Subsetting rule (``scripts/build_dna_datasets.py``): collapse records with
    identical coordinates (17,296 unique), keep full-length regions on chr2L/2R/3L/3R/4/X, merge
    regions overlapping on either strand into 8,940 clusters, draw 6,000 clusters with
    ``numpy.random.default_rng(20240607)`` and keep in each the region with the most
    transcripts (ties: lowest start, then ``+``). No two bundled regions overlap, so splitting
    by region cannot leak sequence. The source is entirely lower case (no repeat masking); it
    is upper-cased here. Size: 12 Mb of sequence, 3.9 MB compressed. Cite: H. Pagès,
    P. Aboyoun, R. Gentleman, S. DebRoy, *Biostrings*, Bioconductor; Adams et al., *Science*
    287:2185-2195 (2000) for the *D. melanogaster* genome.

    Examples
    --------
    >>> from omicformer import datasets
    >>> df = datasets.dm3_upstream()
    >>> df.shape
    (6000, 8)
    """
    import pandas as pd

    rows = []
    with gzip.open(DM3_FASTA, "rt") as fh:
        text = fh.read()
    for block in text.split(">")[1:]:
        header, _, body = block.partition("\n")
        name, chrom, start, end, strand, tx, other = _DM3_HEADER.match(f">{header}").groups()
        rows.append(
            {
                "name": name,
                "chrom": chrom,
                "start": int(start),
                "end": int(end),
                "strand": strand,
                "transcripts": tuple(tx.split(",")),
                "other_tss": tuple(int(x) for x in other.split(",") if x),
                "sequence": body.replace("\n", ""),
            }
        )
    return pd.DataFrame(rows)


def hnf4a_sites() -> list[str]:
    """The 71 real HNF4alpha binding sites shipped with Bioconductor Biostrings.

    Returns
    -------
    71 upper-case 13-bp sites (e.g. ``"AGTTCAAGGATCA"``), in the order of the original
    ``DNAStringSet``.

    Notes
    -----
    Origin: ``Biostrings/data/HNF4alpha.rda`` (``data(HNF4alpha)``) in Debian
    ``r-bioc-biostrings`` 2.66.0 (Artistic-2.0), decoded without R by
    ``scripts/build_dna_datasets.py``. Biostrings documents them as "Seventy one known HNF4alpha
    binding sequences" (author P. Aboyoun) and cites Ellrott, Yang, Sladek and Jiang,
    *Identifying transcription factor binding sites through Markov chain optimization*,
    Bioinformatics 18 Suppl 2:S100-S109 (2002). Size: 71 x 13 bp. Too few to train on; used by
    :func:`omicformer.dnabert.tasks.hnf4a_real_check` as a small real check of models trained on
    motif-derived HNF4A labels.

    Examples
    --------
    >>> from omicformer import datasets
    >>> sites = datasets.hnf4a_sites()
    >>> len(sites), sites[0]
    (71, 'AGTTCAAGGATCA')
    """
    lines = HNF4A_TXT.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


@functools.lru_cache(maxsize=1)
def _jaspar() -> dict:
    return json.loads(JASPAR_JSON.read_text())


def jaspar_motifs() -> dict[str, np.ndarray]:
    """Position frequency matrices of a few JASPAR 2024 CORE motifs.

    Contains the latest CORE version of HNF4A (MA0114), CTCF (MA0139), GATA1 (MA0035), SP1
    (MA0079), FOXA2 (MA0047), CEBPB (MA0466), REST (MA0138), Yy1 (MA0095), TBP (MA0108),
    Nrf1 (MA0506), ELK1 (MA0028) and the *Drosophila* GAGA factor Trl (MA0205), plus MA0114.4
    (the 13-bp HNF4A matrix). See :func:`jaspar_motif_info` for names and TF classes.

    Returns
    -------
    Dict from matrix id (e.g. ``"MA0114.5"``) to a float array of shape ``(4, width)`` of
    site counts, rows ``A, C, G, T``.

    Notes
    -----
    Origin: ``pyjaspar/data/JASPAR2024.sqlite`` of PyPI ``pyjaspar`` 4.0.0. JASPAR data are
    licensed CC-BY 4.0. Cite: Rauluseviciute et al., *JASPAR 2024: 20th anniversary of the
    open-access database of transcription factor binding profiles*, Nucleic Acids Res.
    52:D174-D182 (2024).

    Examples
    --------
    >>> from omicformer import datasets
    >>> pfm = datasets.jaspar_motifs()["MA0114.5"]
    >>> pfm.shape
    (4, 9)
    """
    import numpy as np

    return {mid: np.asarray(m["pfm"], dtype=float) for mid, m in _jaspar()["motifs"].items()}


def jaspar_motif_info() -> pd.DataFrame:
    """Annotation of the motifs in :func:`jaspar_motifs`.

    Returns
    -------
    Data frame indexed by matrix id with columns ``base_id``, ``version``, ``name``, ``class``,
    ``family``, ``tax_group``, ``species_tax_id`` and ``width``. Source and licence as in
    :func:`jaspar_motifs` (JASPAR 2024, CC-BY 4.0).

    Examples
    --------
    >>> from omicformer import datasets
    >>> datasets.jaspar_motif_info().loc["MA0139.2", "name"]
    'CTCF'
    """
    import pandas as pd

    rows = {}
    for mid, m in _jaspar()["motifs"].items():
        base, version = mid.split(".")
        rows[mid] = {
            "base_id": base,
            "version": int(version),
            "name": m["name"],
            "class": m["class"],
            "family": m["family"],
            "tax_group": m["tax_group"],
            "species_tax_id": ",".join(m["species_tax_id"]),
            "width": len(m["pfm"][0]),
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "matrix_id"
    return df
