"""dnabert.pp.Genome: plain, gzip and bgzip FASTA, and the .fai indexes it trusts or rebuilds."""

import gzip
import warnings

import pytest

from omicformer.dnabert import pp


def _check_genome(genome):
    assert genome.chrom_sizes == {"chr1": 28, "chr2": 8}
    assert genome.fetch("chr1", 8, 20) == "ACgtacgtNNNN"
    assert genome.fetch_regions(["chr2:0-6:-", "chr1_0_4"]) == ["GGCCCC", "ACGT"]


def test_genome_plain_gzip_and_bgzip(fasta, tmp_path, monkeypatch):
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    _check_genome(pp.Genome(fasta))
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    with pytest.warns(UserWarning, match="decompressing once"):
        _check_genome(pp.Genome(gz))
    _check_genome(pp.Genome(gz))  # cached copy reused, no warning needed
    bgzf = pytest.importorskip("Bio.bgzf")
    bgz = tmp_path / "block.fa.gz"
    with bgzf.BgzfWriter(str(bgz), "wb") as w:
        w.write(fasta.read_bytes())
    _check_genome(pp.Genome(bgz))


def test_gzip_copy_warning_points_at_the_users_line(fasta, tmp_path, monkeypatch):
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    with pytest.warns(UserWarning, match="decompressing once") as record:
        assert pp.fetch_sequences(["chr1_0_4"], gz) == ["ACGT"]  # Genome opened inside
    assert record[0].filename == __file__


def test_genome_errors(fasta):
    genome = pp.Genome(fasta)
    with pytest.raises(ValueError, match=r"'chr9'.*it has \['chr1', 'chr2'\]"):
        genome.fetch_regions(["chr1:0-4", "chr9:1-4"])
    with pytest.raises(ValueError, match=r"beyond the end of 'chr2' \(8 bases\)"):
        pp.fetch_sequences(["chr2:1-40"], genome)
    with pytest.raises(FileNotFoundError):
        pp.Genome(fasta.parent / "missing.fa")


def test_plain_text_named_as_compressed_is_read(fasta, tmp_path, monkeypatch):
    # pyfaidx goes by the name and refused it as "compressed FASTA not in BGZF format"
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("plain.fa.gz", "plain.fa.bgz"):
        (tmp_path / name).write_bytes(fasta.read_bytes())
        _check_genome(pp.Genome(tmp_path / name))
    assert not (tmp_path / "plain.fa.gz.fai").exists()  # indexed through a link in the cache


def test_a_truncated_bgzip_fasta_is_a_value_error(tmp_path, monkeypatch):
    # biopython's struct.error escaped (a traceback in the CLI)
    bgzf = pytest.importorskip("Bio.bgzf")
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    whole = tmp_path / "whole.fa.bgz"
    with bgzf.BgzfWriter(str(whole), "wb") as w:
        w.write((">chr1\n" + ("ACGT" * 50 + "\n") * 200).encode())
    cut = tmp_path / "cut.fa.bgz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot be read as a FASTA file: the compressed file"):
        pp.Genome(cut)


def test_a_chromosome_given_as_a_number_is_its_name(tmp_path):
    # pandas.read_csv reads an Ensembl-style BED's "1" as the integer 1: the contig "1" (the
    # error said 1 was missing while listing '1'); other non-texts are refused by name
    import numpy as np

    path = tmp_path / "ens.fa"
    path.write_text(">1\nACGTACGTAA\n>MT\nGGCC\n")
    genome = pp.Genome(path)
    assert genome.fetch(1, 0, 4) == genome.fetch(np.int64(1), 0, 4) == "ACGT"
    assert pp.fetch_sequences([pp.Region(np.int64(1), 6, 10, "-")], genome) == ["TTAC"]
    for bad in (1.0, None, True, ""):
        with pytest.raises(ValueError, match="is not a chromosome name"):
            genome.fetch(bad, 0, 4)


def test_genome_gzip_copy_is_indexed_before_it_appears(fasta, tmp_path, monkeypatch):
    # parallel jobs: each writes its own temporary files and renames them into place, the
    # index first, so that no process reads a half-written copy or builds a second index
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    with pytest.warns(UserWarning, match="decompressing once"):
        _check_genome(pp.Genome(gz))
    names = sorted(p.name for p in pp.cache_dir().iterdir())
    assert len(names) == 2 and names[1] == names[0] + ".fai"  # no temporary files left
    copy = pp.cache_dir() / names[0]
    assert (copy.parent / names[1]).stat().st_mtime >= copy.stat().st_mtime


def test_genome_index_of_another_version_of_the_file_is_not_trusted(fasta, tmp_path, monkeypatch):
    # pyfaidx trusts a .fai newer than its FASTA: one written for an older file gave wrong bases
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    pp.Genome(fasta).close()
    index = fasta.with_name("g.fa.fai")
    old_index = index.read_text()
    fasta.write_text(">chr2\nTTTTAAAA\n>chr1 first\nACGTACGTACgtacgtNNNN\nACGTAAAA\n")
    index.write_text(old_index)  # newer than the FASTA, for the old layout
    with pytest.warns(UserWarning, match="does not match g.fa"):
        genome = pp.Genome(fasta)
    assert genome.fetch("chr2", 0, 8) == "TTTTAAAA" and genome.fetch("chr1", 16, 20) == "NNNN"
    assert index.read_text() == old_index  # the user's folder is left as it is


@pytest.mark.parametrize(
    "text",
    [
        ">a\nACGT\nAC\n>b\nGGGG\nTTTT",  # no final newline, a multiple of the line width
        ">a desc\tmore\nACGT\n\n>b\nGG\n",  # a description, a blank line between records
        ">a\r\nACGT\r\nAC\r\n>b\r\nGGGG\r\n",  # CRLF
        ">" + "a" * 5000 + "\nACGT\n>b\nGG\n",  # a header longer than the window read
    ],
)
def test_genome_trusts_a_fitting_index_silently(tmp_path, monkeypatch, text):
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "g.fa"
    path.write_bytes(text.encode())
    pp.Genome(path).close()  # pyfaidx writes the index
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.Genome(path).close()
    assert not (tmp_path / "cache").exists()  # indexed in place, not again in the cache


def test_genome_an_index_older_than_its_fasta_is_rebuilt_in_place_silently(fasta, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    import os

    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    pp.Genome(fasta).close()
    index = fasta.with_name("g.fa.fai")
    fasta.write_text(">chr2\nTTTTAAAA\n>chr1 first\nACGTACGTACgtacgtNNNN\nACGTAAAA\n")
    os.utime(index, (1, 1))  # edited after indexing: pyfaidx rebuilds an older index
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        genome = pp.Genome(fasta)
    assert genome.fetch("chr2", 0, 8) == "TTTTAAAA"
    assert not (tmp_path / "cache").exists()


def test_genome_in_a_read_only_folder_with_an_older_index(fasta, tmp_path, monkeypatch):
    import os

    from omicformer.dnabert import _genome

    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "cache"))
    pp.Genome(fasta).close()
    index = fasta.with_name("g.fa.fai")
    os.utime(index, (1, 1))  # older than the FASTA: pyfaidx would rebuild it in place
    monkeypatch.setattr(_genome.os, "access", lambda path, mode: False)  # read-only folder
    _check_genome(pp.Genome(fasta))
    assert index.stat().st_mtime == 1  # not rewritten: indexed in the cache folder
    assert any(p.name.endswith("g.fa.fai") for p in pp.cache_dir().iterdir())


def test_a_file_that_is_not_a_fasta_is_a_value_error(tmp_path):
    bad = tmp_path / "cells.fa"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00 not a fasta")
    with pytest.raises(ValueError, match=r"cells.fa' cannot be read as a FASTA file"):
        pp.Genome(bad)
    dup = tmp_path / "dup.fa"
    dup.write_text(">c\nACGT\n>c\nGGGG\n")
    with pytest.raises(ValueError, match=r"dup.fa' cannot be read as a FASTA file.*c"):
        pp.Genome(dup)
    gz = tmp_path / "table.txt.gz"  # plain gzip: indexed while decompressed
    gz.write_bytes(gzip.compress(b"gene\tcount\nA\t1\n"))
    with pytest.warns(UserWarning, match="decompressing once"):
        with pytest.raises(ValueError, match=r"table.txt.gz' cannot be read as a FASTA file"):
            pp.Genome(gz)
