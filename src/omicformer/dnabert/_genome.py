"""A small genome wrapper over :mod:`pyfaidx`: indexed, bgzip or plain-gzip FASTA."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._core._cache import cache_root
from .._core._warnings import warn_caller
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


#: What reading a damaged or mis-named (compressed) FASTA raises: a truncated gzip download
#: (EOFError; a truncated bgzip one, read by biopython: struct.error), a corrupt one
#: (gzip.BadGzipFile, zlib.error).
_UNREADABLE = (UnicodeDecodeError, ValueError, EOFError, gzip.BadGzipFile, zlib.error,
               struct.error)  # fmt: skip


def _why(err: BaseException) -> str:
    """The reason of a read error, named by its type where its text is empty or bare."""
    if isinstance(err, EOFError):
        return f"the compressed file ends early (a truncated download?): {err}"
    if isinstance(err, struct.error):  # biopython reading bgzip blocks
        return f"the compressed file is cut short or damaged (a truncated download?): {err}"
    return str(err) or type(err).__name__


def _cached_copy(path: Path, suffix: str) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = path.name.removesuffix(".gz").removesuffix(".bgz")
    if not stem.endswith(suffix):
        stem += suffix
    return cache_dir() / f"{key}-{stem}"


def _decompress_indexed(path: Path, target: Path) -> None:
    """Decompress gzip ``path`` to ``target`` with its ``.fai``, safe beside other processes.

    Each process writes files of its own name, indexes them, then renames the index and the
    FASTA into place (the index first, so that ``target`` never exists without one).
    """
    import uuid

    import pyfaidx

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.fa")
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
        pyfaidx.Faidx(str(tmp)).close()  # writes tmp.fai, newer than tmp
        os.replace(f"{tmp}.fai", f"{target}.fai")
        os.replace(tmp, target)
    finally:
        for leftover in (Path(f"{tmp}.fai"), tmp):
            leftover.unlink(missing_ok=True)


def _index_current(path: Path, index: Path) -> bool:
    """Whether ``index`` exists and is not older than ``path`` (pyfaidx's rule to rebuild)."""
    return index.exists() and index.stat().st_mtime >= path.stat().st_mtime


def _index_fits(path: Path, index: Path, slack: int = 64, n_checked: int = 1000) -> bool:
    """Whether a plain FASTA's ``.fai`` describes it: headers and ends where it says.

    pyfaidx trusts an index newer than the file; one written for another version of the file
    returns wrong bases. Each record's ``>name`` line must end right before the offset of its
    sequence and begin right after the last base of the record before, blank space (line
    ends) between them only; after the last record only blank space may follow (at most
    ``slack`` bytes). Checked on up to ``n_checked`` records spread
    over the file, a few small reads each. An index that cannot be read does not fit.
    """

    def blank(fh, start: int, stop: int) -> bool:
        if not 0 <= stop - start <= slack:
            return False
        fh.seek(start)
        return not fh.read(stop - start).strip()

    try:
        records = []
        for line in index.read_text().splitlines():
            if line.strip():
                name, length, offset, bases, width = line.split("\t")[:5]
                records.append((name, int(length), int(offset), int(bases), int(width)))
        if not records:
            return False
        # the byte after each record's last base (its line end, if any, is blank space)
        ends = [o + ((n - 1) // b * w + (n - 1) % b + 1 if n and b else 0)
                for _, n, o, b, w in records]  # fmt: skip
        step = max(1, len(records) // n_checked)
        with open(path, "rb") as fh:
            if not blank(fh, ends[-1], path.stat().st_size):
                return False
            for j in range(0, len(records), step):
                name, offset = records[j][0], records[j][2]
                first = max(0, offset - 4096)
                fh.seek(first)
                head = fh.read(offset - first)
                kept = head.rstrip(b"\r\n")
                if first and b"\n" not in kept:
                    continue  # a header longer than the window read: not checked
                header = kept.rsplit(b"\n", 1)[-1]
                label = b">" + name.encode()
                after = header[len(label) : len(label) + 1]
                if len(kept) == len(head) or not header.startswith(label) or after.strip():
                    return False
                begins = first + len(kept) - len(header)
                if not blank(fh, ends[j - 1] if j else 0, begins):
                    return False
    except (OSError, ValueError):
        return False
    return True


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

        given = path
        kind = _compression(path)
        if kind == "bgzf":
            try:
                import Bio  # noqa: F401
            except ImportError:
                kind = "gzip"  # no biopython: fall back to a decompressed copy
        if kind == "gzip":
            target = _cached_copy(path, ".fa")
            if not target.exists():
                warn_caller(
                    f"{path.name} is gzip-compressed without bgzip blocks (or biopython is "
                    f"missing), so pyfaidx cannot index it; decompressing once to {target}. "
                    "To avoid the copy: `gunzip -c file.fa.gz | bgzip > file.fa.bgz` or "
                    "`pip install biopython` for bgzip files."
                )
                try:
                    _decompress_indexed(path, target)
                except (*_UNREADABLE, pyfaidx.FastaIndexingError) as err:
                    msg = f"{str(given)!r} cannot be read as a FASTA file: {_why(err)}"
                    raise ValueError(msg) from err
            path = target
        # plain text named as compressed (pyfaidx goes by the name): read through a ".fa" link
        misnamed = kind == "plain" and path.suffix.lower() in {".gz", ".bgz", ".bgzf"}
        index = Path(f"{path}.fai")
        # an index newer than the file that pyfaidx would trust (an older one it rebuilds)
        current = _index_current(path, index)
        stale = current and kind == "plain" and not _index_fits(path, index)
        if stale or misnamed or (not current and not os.access(path.parent, os.W_OK)):
            # a read-only folder (e.g. site-packages) or an index of another version of the
            # file: index a link in the cache instead, leaving the folder as it is
            if stale:
                warn_caller(
                    f"{index} does not match {path.name} (an index of another version of the "
                    "file); indexing it anew in the cache folder. Delete that .fai to rebuild "
                    "it in place."
                )
            link = _cached_copy(path, ".fa" if misnamed else path.suffix)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                try:
                    link.symlink_to(path.resolve())
                except FileExistsError:  # another process made it meanwhile
                    pass
            path = link
        try:
            return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False)
        except (
            *_UNREADABLE,
            pyfaidx.FastaIndexingError,
            pyfaidx.UnsupportedCompressionFormat,
        ) as err:
            msg = f"{str(given)!r} cannot be read as a FASTA file: {_why(err)}"
            raise ValueError(msg) from err

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
        """Raise ``ValueError`` for an unknown chromosome or a region beyond its end.

        Parameters
        ----------
        region
            A parsed region (:func:`parse_regions`).
        """
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
        seq = self._fasta[region.chrom][region.start : region.end]
        return reverse_complement(seq) if region.strand == "-" else seq

    def fetch_regions(self, regions: Iterable[str | Region]) -> list[str]:
        """Sequences of many regions; all are parsed and checked before any is read.

        Parameters
        ----------
        regions
            Region strings or :class:`Region` objects, as :func:`parse_regions` takes them.

        Returns
        -------
        One sequence per region, in order (minus-strand regions reverse-complemented).
        """
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
