"""A small genome wrapper over :mod:`pyfaidx`: indexed, bgzip or plain-gzip FASTA."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._core._cache import cache_root
from ._kmers import reverse_complement
from ._regions import Region, make_region, parse_regions


def cache_dir() -> Path:
    """Folder for decompressed FASTA copies, and for indexes of FASTA in read-only folders.

    It is the ``fasta`` subfolder of the omicformer cache folder: ``$OMICFORMER_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/omicformer``, else ``~/.cache/omicformer`` (an empty variable counts
    as unset). The folder is created when something is first written into it.

    Returns
    -------
    ``<cache folder>/fasta``, e.g. ``~/.cache/omicformer/fasta``.

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.cache_dir().name
    'fasta'
    """
    return cache_root() / "fasta"


def _compression(path: Path) -> str:
    """``"plain"``, ``"bgzf"`` (block gzip, random access) or ``"gzip"`` (plain gzip)."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    if head[:2] != b"\x1f\x8b":
        return "plain"
    # BGZF: gzip with FEXTRA flag and a 'BC' extra subfield (SAM/BAM spec, section 4.1)
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzf"
    return "gzip"


def _cached_copy(path: Path, suffix: str) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = path.name.removesuffix(".gz").removesuffix(".bgz")
    if not stem.endswith(suffix):
        stem += suffix
    return cache_dir() / f"{key}-{stem}"


class Genome:
    """Random access to a reference genome FASTA, with 0-based half-open coordinates.

    Parameters
    ----------
    fasta
        Path to a FASTA file: plain (a ``.fai`` index is built next to it, or in the cache
        folder if that folder is read-only), bgzip-compressed (needs ``biopython``), or
        plain-gzip compressed. pyfaidx cannot seek in plain gzip, so such a file is decompressed
        once into :func:`cache_dir` (a warning says where; ``bgzip`` the file to avoid this).

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> genome = pp.Genome("genome.fa")  # doctest: +SKIP
    >>> genome.fetch("chr1", 100, 600)  # doctest: +SKIP
    >>> genome.fetch_regions(["chr1:100-600", "chr2:0-50:-"])  # doctest: +SKIP
    """

    def __init__(self, fasta: str | os.PathLike[str]) -> None:
        path = Path(fasta).expanduser()
        if not path.is_file():
            msg = f"FASTA file {str(path)!r} does not exist."
            raise FileNotFoundError(msg)
        self.path = path
        self._fasta = self._open(path)
        self.chrom_sizes: dict[str, int] = {
            name: len(record) for name, record in self._fasta.records.items()
        }

    @staticmethod
    def _open(path: Path):
        import pyfaidx

        kind = _compression(path)
        if kind == "bgzf":
            try:
                import Bio  # noqa: F401
            except ImportError:
                kind = "gzip"  # no biopython: fall back to a decompressed copy
        if kind == "gzip":
            target = _cached_copy(path, ".fa")
            if not target.exists():
                warnings.warn(
                    f"{path.name} is gzip-compressed without bgzip blocks (or biopython is "
                    f"missing), so pyfaidx cannot index it; decompressing once to {target}. "
                    "To avoid the copy: `gunzip -c file.fa.gz | bgzip > file.fa.bgz` or "
                    "`pip install biopython` for bgzip files.",
                    stacklevel=3,
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 22)
                tmp.replace(target)
            path = target
        index = Path(f"{path}.fai")
        if not index.exists() and not os.access(path.parent, os.W_OK):
            # read-only folder (e.g. site-packages): index a symlink in the cache instead
            link = _cached_copy(path, path.suffix)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(path.resolve())
            path = link
        return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False)

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.chrom_sizes)} sequences)"

    def __contains__(self, chrom: str) -> bool:
        return chrom in self.chrom_sizes

    def close(self) -> None:
        """Close the underlying file handles."""
        self._fasta.close()

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_region(self, region: Region) -> None:
        """Raise ``ValueError`` for an unknown chromosome or a region beyond its end."""
        size = self.chrom_sizes.get(region.chrom)
        if size is None:
            some = list(self.chrom_sizes)[:5]
            more = f" and {len(self.chrom_sizes) - 5} more" if len(self.chrom_sizes) > 5 else ""
            msg = (
                f"Chromosome {region.chrom!r} of region {region.name!r} is not in "
                f"{self.path.name}; it has {some}{more}. Check the genome build and naming "
                "('chr1' vs '1')."
            )
            raise ValueError(msg)
        if region.end > size:
            msg = (
                f"Region {region.name!r} ends at {region.end}, beyond the end of "
                f"{region.chrom!r} ({size} bases) in {self.path.name}."
            )
            raise ValueError(msg)

    def fetch(self, chrom: str, start: int, end: int, strand: str = "+") -> str:
        """Sequence of ``chrom[start:end]`` (0-based half-open), reverse-complemented on ``-``.

        Parameters
        ----------
        chrom
            Chromosome name, as in the FASTA headers.
        start, end
            Integer coordinates, ``0 <= start < end <= chromosome length``.
        strand
            ``"+"`` or ``"-"``; anything else is a ``ValueError``.

        Returns
        -------
        The sequence in its original case.
        """
        region = make_region(chrom, start, end, strand)
        self.check_region(region)
        seq = self._fasta[chrom][region.start : region.end]
        return reverse_complement(seq) if region.strand == "-" else seq

    def fetch_regions(self, regions: Iterable[str | Region]) -> list[str]:
        """Sequences of many regions; all are parsed and checked before any is read."""
        parsed = parse_regions(regions)
        for region in parsed:
            self.check_region(region)
        return [self.fetch(*r) for r in parsed]


def as_genome(fasta: str | os.PathLike[str] | Genome) -> Genome:
    """Return ``fasta`` if it is a :class:`Genome`, else open it."""
    return fasta if isinstance(fasta, Genome) else Genome(fasta)


def fetch_sequences(
    regions: Sequence[str | Region], fasta: str | os.PathLike[str] | Genome
) -> list[str]:
    """DNA sequences of genomic regions (``chr1:100-600`` etc., 0-based half-open).

    Parameters
    ----------
    regions
        Region strings in any accepted form (see :func:`parse_region`); ``-`` strand regions
        are reverse-complemented.
    fasta
        Genome FASTA path or an open :class:`Genome`.

    Returns
    -------
    One sequence per region, in order (original case, so soft-masked repeats stay lower case).

    Examples
    --------
    >>> from omicformer.dnabert import pp
    >>> pp.fetch_sequences(["chr1:100-600", "chr1_700_900(-)"], "genome.fa")  # doctest: +SKIP
    """
    parsed = parse_regions(regions)  # parse errors before touching the file
    return as_genome(fasta).fetch_regions(parsed)
