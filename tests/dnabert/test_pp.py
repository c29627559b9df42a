import gzip
import itertools

import numpy as np
import pytest

from omicformer.dnabert import pp


def _official_ids(seq: str, k: int) -> list[int]:
    """Naive reference: official seq2kmer + vocab.txt dict lookup ([UNK] if missing)."""
    vocab = {tok: i for i, tok in enumerate(pp.kmer_vocab(k))}
    return [2] + [vocab.get(t, 1) for t in pp.seq2kmer(seq, k).split()] + [3]


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_vocab_order_matches_official(k):
    vocab = pp.kmer_vocab(k)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == 5 + 4**k == pp.vocab_size(k)
    assert vocab[5:] == ["".join(p) for p in itertools.product("ATCG", repeat=k)]
    if k == 6:
        assert vocab[5:9] == ["AAAAAA", "AAAAAT", "AAAAAC", "AAAAAG"]
        assert vocab[4100] == "GGGGGG"


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_tokenize_matches_official_seq2kmer(k):
    rng = np.random.default_rng(k)
    seqs = ["".join(rng.choice(list("ACGTACGTACGTN"), size=n)) for n in (k, k + 1, 40, 97, 200)]
    out = pp.tokenize(seqs, k=k)
    for i, seq in enumerate(seqs):
        ref = _official_ids(seq, k)
        assert out["input_ids"][i, : len(ref)].tolist() == ref
        assert out["attention_mask"][i].sum() == len(ref)
        assert (out["input_ids"][i, len(ref) :] == 0).all()


def test_lower_case_and_iupac():
    upper = pp.tokenize(["ACGTACGTAA"], k=3)["input_ids"]
    lower = pp.tokenize(["acgtACGTaa"], k=3)["input_ids"]
    np.testing.assert_array_equal(upper, lower)
    ids = pp.tokenize(["AAARAAA"], k=3)["input_ids"][0]
    assert ids.tolist() == [2, 5, 1, 1, 1, 5, 3]  # every k-mer touching R -> [UNK]


def test_max_length_and_truncation():
    seq = "A" * 520
    with pytest.raises(ValueError, match="split_windows"):
        pp.tokenize([seq], k=6)
    out = pp.tokenize([seq], k=6, truncation=True)
    assert out["input_ids"].shape == (1, 512)
    assert pp.tokenize(["A" * 515], k=6)["input_ids"].shape == (1, 512)


def test_bad_sequences_raise_with_name_and_position():
    with pytest.raises(ValueError, match=r"'s2' has invalid character 'X' at position 3"):
        pp.tokenize(["ACGT", "ACGXT"], k=3, names=["s1", "s2"])
    with pytest.raises(ValueError, match="shorter than k=6"):
        pp.tokenize(["ACGTACGT", "ACG"], k=6)
    with pytest.raises(ValueError, match="invalid character"):
        pp.tokenize(["ACGé"], k=3)
    for k in (2, 7, "6", True):
        with pytest.raises(ValueError, match="3, 4, 5 or 6"):
            pp.tokenize(["ACGTACGT"], k=k)


def test_vocab_txt_roundtrip_and_k_check(tmp_path):
    path = pp.write_vocab_txt(tmp_path / "vocab.txt", k=4)
    tokens = pp.read_vocab_txt(path)
    assert pp.k_from_vocab(tokens) == 4
    with pytest.raises(ValueError, match="does not fit its k"):
        pp.k_from_vocab(tokens, k=6)
    with pytest.raises(ValueError, match="fits no DNABERT k-mer size"):
        pp.k_from_vocab(tokens[:-1])
    with pytest.raises(ValueError, match="not the official"):
        pp.k_from_vocab(sorted(tokens))


def test_reverse_complement_and_windows():
    assert pp.reverse_complement("ACGTNrYac") == "gtRyNACGT"
    assert pp.window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert pp.window_starts(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert pp.window_starts(3, 4, 3).tolist() == [0]
    wins, owner = pp.split_windows(["A" * 3, "C" * 10], window=4, overlap=1)
    assert wins == ["AAA", "CCCC", "CCCC", "CCCC"]
    assert owner.tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="overlap"):
        pp.split_windows(["ACGT"], window=4, overlap=4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chr1:100-600", ("chr1", 100, 600, "+")),
        ("chr1-100-600", ("chr1", 100, 600, "+")),
        ("chr1_100_600", ("chr1", 100, 600, "+")),
        ("chr1:100-600:-", ("chr1", 100, 600, "-")),
        ("chr1:100-600(-)", ("chr1", 100, 600, "-")),
        ("chrUn_gl000220_5_90", ("chrUn_gl000220", 5, 90, "+")),
    ],
)
def test_parse_region(text, expected):
    region = pp.parse_region(text)
    assert tuple(region) == expected
    assert region.width == expected[2] - expected[1]


@pytest.mark.parametrize("text", ["chr1", "chr1:100", "chr1:a-5", "chr1:100-600:x", ""])
def test_malformed_region_shows_accepted_forms(text):
    with pytest.raises(ValueError, match="Accepted forms: 'chr1:100-600'"):
        pp.parse_region(text)


def test_start_not_before_end():
    with pytest.raises(ValueError, match=r"start \(600\) >= end \(100\)"):
        pp.parse_region("chr1:600-100")
    with pytest.raises(ValueError, match="Region number 1"):
        pp.parse_regions(["chr1:1-5", "chr1:5-5"])


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(">chr1 first\nACGTACGTACgtacgtNNNN\nACGTAAAA\n>chr2\nGGGGCCCC\n")
    return path


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


def test_genome_errors(fasta):
    genome = pp.Genome(fasta)
    with pytest.raises(ValueError, match=r"'chr9'.*it has \['chr1', 'chr2'\]"):
        genome.fetch_regions(["chr1:0-4", "chr9:1-4"])
    with pytest.raises(ValueError, match=r"beyond the end of 'chr2' \(8 bases\)"):
        pp.fetch_sequences(["chr2:1-40"], genome)
    with pytest.raises(FileNotFoundError):
        pp.Genome(fasta.parent / "missing.fa")


def test_pp_pl_tl_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; import omicformer.dnabert.pp, omicformer.dnabert.pl, omicformer.dnabert.tl; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
