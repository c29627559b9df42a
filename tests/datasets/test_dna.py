import re
import warnings

import numpy as np
import pytest

from omicformer import datasets
from omicformer.datasets import _dna


def test_files_present_and_small():
    files = sorted(_dna._DATA.glob("dna_*"))
    names = {f.name for f in files}
    assert {
        "dna_ce2_chrX_0-4000000.fa.gz",
        "dna_ce2_chrX_0-4000000.fa.gz.fai",
        "dna_ce2_chrX_0-4000000.fa.gz.gzi",
        "dna_dm3_upstream2000_subset.fa.gz",
        "dna_hnf4alpha_sites.txt",
        "dna_jaspar2024_motifs.json",
    } <= names
    assert sum(f.stat().st_size for f in files) < 8_000_000


def test_exported():
    for name in _dna.__all__:
        assert callable(getattr(datasets, name))


def test_ce_sequence():
    seq = datasets.ce_chrx_sequence()
    assert len(seq) == 4_000_000
    assert set(seq) == set("ACGT")
    assert seq.startswith("CTAAGCCTAAGC")  # C. elegans telomeric repeat at the chrX start


def test_ce_fasta_cached_plain(tmp_path, monkeypatch):
    import pyfaidx

    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path))
    path = datasets.ce_chrx_fasta_path()
    assert path.parent == tmp_path
    assert path.suffix == ".fa"
    assert datasets.ce_chrx_fasta_path() == path  # second call reuses the cache
    fa = pyfaidx.Fasta(str(path))
    seq = datasets.ce_chrx_sequence()
    assert len(fa["chrX"]) == 4_000_000
    assert str(fa["chrX"][1_234_567:1_234_667]) == seq[1_234_567:1_234_667]


def test_ce_fasta_bgzf_in_place():
    import pyfaidx

    pytest.importorskip("Bio", reason="pyfaidx reads BGZF files through Biopython")
    path = datasets.ce_chrx_fasta_path(compressed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "index older than FASTA" depends on checkout times
        fa = pyfaidx.Fasta(str(path), rebuild=False)
        assert str(fa["chrX"][3_999_900:4_000_000]) == datasets.ce_chrx_sequence()[-100:]


def test_dm3_upstream():
    df = datasets.dm3_upstream()
    assert df.shape == (6000, 8)
    assert list(df.columns) == [
        "name",
        "chrom",
        "start",
        "end",
        "strand",
        "transcripts",
        "other_tss",
        "sequence",
    ]
    assert df["name"].is_unique
    assert (df["end"] - df["start"] == 2000).all()
    assert (df["sequence"].str.len() == 2000).all()
    assert df["sequence"].str.fullmatch("[ACGTN]+").all()
    assert set(df["strand"]) == {"+", "-"}
    assert set(df["chrom"]) <= {"chr2L", "chr2R", "chr3L", "chr3R", "chr4", "chrX"}
    # no two bundled regions overlap (the subsetting keeps one region per overlap cluster)
    for _, g in df.sort_values(["chrom", "start"]).groupby("chrom"):
        assert (g["start"].to_numpy()[1:] >= g["end"].to_numpy()[:-1]).all()
    assert all(
        n.startswith(f"{t[0]}_up_2000_") for n, t in zip(df["name"], df["transcripts"], strict=True)
    )


def test_dm3_orientation_tata_peak():
    """TATA boxes sit ~30 bp upstream of the TSS, i.e. ~30 bp before each sequence's end."""
    counts = np.zeros(2000)
    for seq in datasets.dm3_upstream()["sequence"]:
        for m in re.finditer("(?=TATAAA)", seq):
            counts[m.start()] += 1
    peak = 2000 - int(np.argmax(counts))
    assert 25 <= peak <= 35


def test_hnf4a_sites():
    sites = datasets.hnf4a_sites()
    assert len(sites) == 71
    assert {len(s) for s in sites} == {13}
    assert sites[0] == "AGTTCAAGGATCA"
    assert all(set(s) <= set("ACGT") for s in sites)


def test_jaspar():
    motifs = datasets.jaspar_motifs()
    info = datasets.jaspar_motif_info()
    assert set(motifs) == set(info.index)
    assert motifs["MA0114.5"].shape == (4, 9)
    assert motifs["MA0114.4"].shape == (4, 13)
    assert motifs["MA0139.2"].shape == (4, 15)
    for mid, pfm in motifs.items():
        assert pfm.shape[0] == 4
        assert (pfm >= 0).all()
        assert (pfm.sum(axis=0) > 0).all()
        assert info.loc[mid, "width"] == pfm.shape[1]
    assert info.loc["MA0139.2", "name"] == "CTCF"
    # CTCF core motif (JASPAR consensus TGCCACCAGGGGGCGC)
    consensus = "".join("ACGT"[i] for i in motifs["MA0139.2"].argmax(axis=0))
    assert "CCACCAGGGGGCG" in consensus


@pytest.mark.parametrize("loader", ["hnf4a_sites", "jaspar_motifs", "dm3_upstream"])
def test_loaders_return_fresh_objects(loader):
    a, b = getattr(datasets, loader)(), getattr(datasets, loader)()
    assert a is not b
