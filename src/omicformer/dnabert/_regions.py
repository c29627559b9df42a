"""Genomic region strings as used for ATAC peaks: ``chr1:100-600``, ``chr1-100-600``, ``chr1_100_600``.

Coordinates are **0-based, half-open** ``[start, end)`` like BED files, pyfaidx slices and
CREsted: ``chr1:100-600`` is the 500 bases ``fasta["chr1"][100:600]``. (UCSC browser strings
are 1-based closed; subtract 1 from their start.) An optional strand suffix ``:+``/``:-``,
``_+``/``_-`` or ``(+)``/``(-)`` asks for the reverse complement on ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from .._core._checks import check_int

ACCEPTED_FORMS = (
    "'chr1:100-600', 'chr1-100-600' or 'chr1_100_600' (0-based half-open, like BED), optionally "
    "with a strand: 'chr1:100-600:-' or 'chr1:100-600(-)'"
)

_REGION_RE = re.compile(
    r"^(?P<chrom>\S+?)[:_-](?P<start>\d+)[-_](?P<end>\d+)"
    r"(?:[:_](?P<strand>[+-])|\((?P<pstrand>[+-])\))?$"
)
STRANDS = ("+", "-")


class Region(NamedTuple):
    """A genomic interval, 0-based half-open ``[start, end)``, with strand ``"+"`` or ``"-"``.

    Parameters
    ----------
    chrom
        Chromosome name as the FASTA spells it (``"chr1"`` or ``"1"``).
    start, end
        0-based start and end (exclusive), as in BED.
    strand
        ``"+"`` (default) or ``"-"`` (the sequence is reverse-complemented when read).
    """

    chrom: str
    start: int
    end: int
    strand: str = "+"

    @property
    def width(self) -> int:
        """Number of bases, ``end - start``."""
        return self.end - self.start

    @property
    def name(self) -> str:
        """Canonical string ``chrom:start-end`` (with ``:-`` for the minus strand)."""
        base = f"{self.chrom}:{self.start}-{self.end}"
        return base + ":-" if self.strand == "-" else base


def make_region(chrom: str, start: Any, end: Any, strand: Any = "+") -> Region:
    """A :class:`Region` from its fields, each checked before any sequence is read.

    Parameters
    ----------
    chrom
        Chromosome (sequence) name; an integer (``1``, as ``pandas.read_csv`` reads an
        Ensembl-style BED's first column) is read as its text ``"1"``.
    start, end
        0-based half-open coordinates: integers (Python or NumPy) with ``0 <= start < end``;
        floats such as ``1.7`` are refused rather than truncated.
    strand
        ``"+"`` or ``"-"`` (``"-"`` reverse-complements); anything else is refused.

    Returns
    -------
    The region, with ``start`` and ``end`` as Python ``int``.
    """
    if isinstance(chrom, (int, np.integer)) and not isinstance(chrom, (bool, np.bool_)):
        chrom = str(chrom)
    if not isinstance(chrom, str) or not chrom:
        msg = (
            f"chrom={chrom!r} of region {chrom}:{start}-{end} is not a chromosome name; give "
            "the name as in the FASTA headers (a string such as 'chr1' or '1')."
        )
        raise ValueError(msg)
    where = f"region {chrom}:{start}-{end}"
    start = check_int("start", start, minimum=0, hint=f"{where}, 0-based")
    end = check_int("end", end, minimum=1, hint=where)
    if start >= end:
        msg = f"Invalid interval {chrom}:{start}-{end}: need 0 <= start < end (0-based half-open)."
        raise ValueError(msg)
    if not (isinstance(strand, str) and strand in STRANDS):
        msg = (
            f"strand={strand!r} of {where} is not a strand; use '+' or '-' (the reverse "
            "complement)."
        )
        raise ValueError(msg)
    return Region(chrom, start, end, strand)


def parse_region(region: str | Region) -> Region:
    """Parse an ATAC-style region string into a :class:`Region`.

    Parameters
    ----------
    region
        ``"chr1:100-600"``, ``"chr1-100-600"`` or ``"chr1_100_600"``, optionally followed by a
        strand ``":-"``, ``"_-"`` or ``"(-)"``. Coordinates are 0-based half-open (BED-like).
        Chromosome names may themselves contain ``_`` or ``-`` (``chrUn_gl000220_5_90``).

    Returns
    -------
    The parsed region.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.parse_region("chr1:100-600")
    Region(chrom='chr1', start=100, end=600, strand='+')
    >>> pp.parse_region("chr2_10_50(-)").strand
    '-'
    """
    if isinstance(region, Region):
        return make_region(*region)
    if region is None or (isinstance(region, float) and region != region):  # None or NaN
        msg = f"A region is missing ({region!r}); every entry needs a region string."
        raise ValueError(msg)
    text = str(region).strip()
    match = _REGION_RE.match(text)
    if match is not None and match["chrom"][-1] in ":_-":  # 'chr1:-5-10' -> chrom 'chr1:'
        sep = text[match.start("start") - 1]
        why = "start must be an integer >= 0" if sep == "-" else "the separators are doubled"
        msg = f"Could not parse region {region!r}: {why}. Accepted forms: {ACCEPTED_FORMS}."
        raise ValueError(msg)
    if match is None:
        msg = f"Could not parse region {region!r}. Accepted forms: {ACCEPTED_FORMS}."
        raise ValueError(msg)
    start, end = int(match["start"]), int(match["end"])
    if start >= end:
        msg = (
            f"Region {region!r} has start ({start}) >= end ({end}); regions are 0-based "
            "half-open [start, end), so end must be larger than start."
        )
        raise ValueError(msg)
    strand = match["strand"] or match["pstrand"] or "+"
    return Region(match["chrom"], start, end, strand)


def parse_regions(regions: Iterable[str | Region]) -> list[Region]:
    """Parse many region strings; the error names the first bad one and its position.

    Parameters
    ----------
    regions
        A list (or other iterable, not a single string) of ``"chr:start-end"``,
        ``"chr:start-end:-"``, ``"chr_start_end"`` strings or :class:`Region` objects.

    Returns
    -------
    One :class:`Region` per input, in order.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> [r.width for r in pp.parse_regions(["chr1:0-500", "chr2_10_20"])]
    [500, 10]
    """
    if isinstance(regions, str | Region):
        msg = (
            f"regions must be a list of regions, not the single region {regions!r}; wrap it: "
            "[region]."
        )
        raise TypeError(msg)
    out = []
    for i, region in enumerate(regions):
        try:
            out.append(parse_region(region))
        except ValueError as err:
            msg = f"Region at position {i} (0-based): {err}"
            raise ValueError(msg) from None
    return out
