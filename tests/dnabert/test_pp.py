import itertools

import numpy as np
import pandas as pd
import pytest

from omicformer.dnabert import pp

# The official DNABERT ``vocab.txt`` for k=3 (zhihan1996/DNA_bert_3), one token per line, line
# number = id: five specials, then the 64 3-mers in ``itertools.product("ATCG", repeat=3)`` order.
VOCAB3_TXT = (
    "\n".join(
        """
    [PAD] [UNK] [CLS] [SEP] [MASK]
    AAA AAT AAC AAG ATA ATT ATC ATG
    ACA ACT ACC ACG AGA AGT AGC AGG
    TAA TAT TAC TAG TTA TTT TTC TTG
    TCA TCT TCC TCG TGA TGT TGC TGG
    CAA CAT CAC CAG CTA CTT CTC CTG
    CCA CCT CCC CCG CGA CGT CGC CGG
    GAA GAT GAC GAG GTA GTT GTC GTG
    GCA GCT GCC GCG GGA GGT GGC GGG
    """.split()
    )
    + "\n"
)

# Other k: size 5 + 4**k and literal entries (id -> token) of the official files.
VOCAB_SPOTS = {
    4: (261, {5: "AAAA", 6: "AAAT", 7: "AAAC", 8: "AAAG", 9: "AATA", 50: "ACGT", 260: "GGGG"}),
    5: (1029, {5: "AAAAA", 6: "AAAAT", 113: "ATCGA", 261: "TAAAA", 1028: "GGGGG"}),
    6: (4101, {5: "AAAAAA", 8: "AAAAAG", 1029: "TAAAAA", 2053: "CAAAAA", 4100: "GGGGGG"}),
}


def _official_seq2kmer(seq: str, k: int) -> str:
    """DNABERT ``seq2kmer``: stride-1 overlapping k-mers joined by spaces."""
    return " ".join(seq[x : x + k] for x in range(len(seq) + 1 - k))


def _official_vocab(k: int) -> dict[str, int]:
    """token -> id of the official vocab.txt (literal text for k=3, product order otherwise)."""
    if k == 3:
        lines = VOCAB3_TXT.splitlines()
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        lines = specials + ["".join(t) for t in itertools.product("ATCG", repeat=k)]
        size, spots = VOCAB_SPOTS[k]
        assert len(lines) == size and all(lines[i] == t for i, t in spots.items())
    return {tok: i for i, tok in enumerate(lines)}


def _official_ids(seq: str, k: int) -> list[int]:
    """Official DNATokenizer on ``seq2kmer`` output: [CLS] + lookup ([UNK]=1 if absent) + [SEP]."""
    vocab = _official_vocab(k)
    return [vocab["[CLS]"]] + [vocab.get(t, 1) for t in _official_seq2kmer(seq, k).split()] + [3]


def test_vocab_k3_equals_official_text(tmp_path):
    assert len(VOCAB3_TXT.splitlines()) == 69
    assert pp.kmer_vocab(3) == VOCAB3_TXT.splitlines()
    assert pp.vocab_size(3) == 69
    assert pp.write_vocab_txt(tmp_path / "vocab.txt", k=3).read_text() == VOCAB3_TXT


@pytest.mark.parametrize("k", [4, 5, 6])
def test_vocab_order_matches_official(k):
    size, spots = VOCAB_SPOTS[k]
    vocab = pp.kmer_vocab(k)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == size == pp.vocab_size(k)
    for i, tok in spots.items():
        assert vocab[i] == tok
    assert vocab == list(_official_vocab(k))


# sha256 of "\n".join(tokens) of the official vocab.txt files (jerryji1993/DNABERT at b6da04e,
# src/transformers/dnabert-config/bert-config-{k}/vocab.txt, one token per line)
OFFICIAL_VOCAB_SHA256 = {
    3: "868b0b1ca9c6dfe72771d7c98b406c21ab712d70b0df65216a19868149934b7d",
    4: "a78f8d49dfd18288b2838dacb207dc71932c078f1c5083df2c4465658ae39c34",
    5: "3d422649f2193de4cb8af321b42dd5b4a98151138ad68653649638fa5aa91101",
    6: "dece9c2557cc034f7b9c89cfe5a8740d104a9b1db28a296bd4af8d3bd51ada59",
}


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_vocab_equals_official_files_token_for_token(k, tmp_path):
    import hashlib

    tokens = pp.read_vocab_txt(pp.write_vocab_txt(tmp_path / "vocab.txt", k=k))
    assert hashlib.sha256("\n".join(tokens).encode()).hexdigest() == OFFICIAL_VOCAB_SHA256[k]
    assert (
        hashlib.sha256("\n".join(pp.kmer_vocab(k)).encode()).hexdigest()
        == (OFFICIAL_VOCAB_SHA256[k])
    )


@pytest.mark.parametrize("k", [3, 6])
def test_truncation_keeps_the_first_kmers_as_official_encode_plus(k):
    """Official ``encode_plus(max_length=512)``: the k-mer ids are cut to 512 - 2 (first ones
    kept), then ``[CLS]`` and ``[SEP]`` are added (the 510-id case is sliced back to 512)."""
    rng = np.random.default_rng(k)
    seqs = ["".join(rng.choice(list("ACGTN"), size=n)) for n in (700, 515 + k, 300)]
    out = pp.tokenize(seqs, k=k, truncation=True)
    for i, seq in enumerate(seqs):
        ids = _official_ids(seq, k)[1:-1][:510]  # k-mer ids only, truncated to 512 - 2
        ref = [2, *ids, 3]
        assert out["input_ids"][i, : len(ref)].tolist() == ref
        assert out["attention_mask"][i].sum() == len(ref)
    assert out["input_ids"].shape == (3, 512)


def test_tokenize_hand_computed_example():
    # ACGTA -> ACG CGT GTA; with A,T,C,G = 0,1,2,3: ACG = 0*16+2*4+3 = 11 -> id 16,
    # CGT = 2*16+3*4+1 = 45 -> 50, GTA = 3*16+1*4+0 = 52 -> 57, TAC = 1*16+0*4+2 = 18 -> 23
    assert _official_seq2kmer("ACGTA", 3) == "ACG CGT GTA"
    assert _official_ids("ACGTA", 3) == [2, 16, 50, 57, 3]
    out = pp.tokenize(["ACGTA", "ACGTAC"], k=3)
    assert out["input_ids"].tolist() == [[2, 16, 50, 57, 3, 0], [2, 16, 50, 57, 23, 3]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert pp.seq2kmer("ACGTA", 3) == "ACG CGT GTA"


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_tokenize_matches_official_seq2kmer(k):
    rng = np.random.default_rng(k)
    seqs = ["".join(rng.choice(list("ACGTACGTACGTN"), size=n)) for n in (k, k + 1, 40, 97, 200)]
    out = pp.tokenize(seqs, k=k)
    for i, seq in enumerate(seqs):
        ref = _official_ids(seq, k)
        assert len(ref) == len(seq) - k + 3
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
    with pytest.raises(ValueError, match=r"invalid character '1'.*pass fasta=GENOME"):
        pp.tokenize(["chr1:100-600"], k=3)  # a region given where sequences go
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
    ("kwargs", "match"),
    [
        ({"window": 6.0}, r"window=6.0 must be an integer >= 1"),  # was a slicing TypeError
        ({"window": 6, "overlap": 2.5}, r"overlap=2.5 must be an integer >= 0"),
        ({"window": 6, "overlap": -1}, r"overlap=-1 must be an integer >= 0"),
    ],
)
def test_split_windows_needs_integers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pp.split_windows(["AAAACCCCGGTT"], **kwargs)
    wins, _ = pp.split_windows(["AAAACCCCGG"], window=np.int64(6), overlap=np.int32(2))
    assert wins == ["AAAACC", "CCCCGG"]  # the docstring example, with NumPy integers
    with pytest.raises(ValueError, match=r"stride=3.0 must be an integer >= 1"):
        pp.window_starts(10, 4, 3.0)


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
    with pytest.raises(ValueError, match=r"Region at position 1 \(0-based\)"):
        pp.parse_regions(["chr1:1-5", "chr1:5-5"])
    for missing in (None, float("nan")):  # a NaN of a region column: was "region 'nan'"
        with pytest.raises(ValueError, match=r"position 1 \(0-based\): A region is missing"):
            pp.parse_regions(["chr1:1-5", missing])


def test_pp_pl_tl_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; import omicformer.dnabert.pp, omicformer.dnabert.pl, omicformer.dnabert.tl; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_strand_and_non_integer_coordinates_refused(fasta):
    genome = pp.Genome(fasta)
    # chr1[8:12] is "ACgt"; its reverse complement is "acGT"
    assert genome.fetch("chr1", np.int64(8), np.int64(12), "-") == "acGT"
    with pytest.raises(ValueError, match=r"strand='minus'.*'\+' or '-'"):
        genome.fetch("chr1", 8, 12, "minus")
    with pytest.raises(ValueError, match=r"Region at position 1 \(0-based\): strand='x'"):
        pp.fetch_sequences([pp.Region("chr1", 0, 4), pp.Region("chr1", 0, 5, "x")], genome)
    with pytest.raises(ValueError, match=r"start=1.7 must be an integer >= 0"):
        genome.fetch("chr1", 1.7, 10)
    with pytest.raises(ValueError, match=r"end=10.0 must be an integer"):
        pp.fetch_sequences([pp.Region("chr1", 0, 10.0)], genome)
    with pytest.raises(ValueError, match=r"start=-5 must be an integer >= 0"):
        genome.fetch("chr1", -5, 10)


@pytest.mark.parametrize("text", ["chr1:-5-10", "chr1_-5_10", "chr1--5-10", "chr1:-5-10:-"])
def test_negative_start_is_not_read_as_a_chromosome(fasta, text):
    with pytest.raises(ValueError, match=r"Could not parse .*: start must be an integer >= 0"):
        pp.parse_region(text)
    with pytest.raises(ValueError, match=r"position 0 \(0-based\): Could not parse region 'chr1"):
        pp.fetch_sequences([text], fasta)


def test_doubled_separator_is_not_read_as_a_chromosome():
    with pytest.raises(ValueError, match=r"'chr1::5-10': the separators are doubled"):
        pp.parse_region("chr1::5-10")


def test_single_string_is_not_iterated_base_by_base(fasta):
    with pytest.raises(TypeError, match=r"single region 'chr1:0-4'; wrap it: \[region\]"):
        pp.fetch_sequences("chr1:0-4", fasta)
    with pytest.raises(TypeError, match=r"wrap it: \[region\]"):
        pp.Genome(fasta).fetch_regions(pp.Region("chr1", 0, 4))
    with pytest.raises(TypeError, match=r"not a single string; wrap it: \[seq\]"):
        pp.split_windows("AAAACCCCGG", 6)
    assert pp.fetch_sequences(["chr1:0-4"], fasta) == ["ACGT"]
    windows, owner = pp.split_windows(["AAAACCCCGG"], 6)  # last window aligned to the end
    assert windows == ["AAAACC", "CCCCGG"]
    assert owner.tolist() == [0, 0]


def test_series_read_by_position_and_named_by_index():
    # ATC, TCG, CGG, GGA -> 5 + base-4 value with A,T,C,G = 0,1,2,3: 11, 32, 52, 65
    ids = pp.tokenize(pd.Series(["ATCGGA"], index=[7]), k=3)["input_ids"]
    assert ids.tolist() == [[2, 11, 32, 52, 65, 3]]
    with pytest.raises(ValueError, match=r"Sequence '6' has invalid character 'X' at position 1"):
        pp.tokenize(pd.Series(["ACGT", "AXGT"], index=[5, 6]), k=3)
    shuffled = pd.Series(["ACGT", "AXGT", "ACGTT"], index=[2, 0, 1])
    with pytest.raises(ValueError, match=r"Sequence '0' has invalid character 'X' at position 1"):
        pp.check_sequences(shuffled, 3)
    with pytest.raises(ValueError, match=r"Sequence 'b' has 2 bases, shorter than k=3"):
        pp.check_sequences(pd.Series(["ACGT", "AC"], index=["a", "b"]), 3)
    with pytest.raises(ValueError, match=r"Sequence 'long' gives 8 k-mers"):
        pp.tokenize(pd.Series(["A" * 10], index=["long"]), k=3, max_len=5)


def test_non_string_sequences_refused_by_name():
    with pytest.raises(ValueError, match=r"Sequence '#0' is None \(NoneType\), not a DNA string"):
        pp.tokenize([None], k=3)
    with pytest.raises(ValueError, match=r"Sequence 'b' is nan \(float\)"):
        pp.check_sequences(pd.Series(["ACGT", np.nan], index=["a", "b"]), 3)
    with pytest.raises(ValueError, match=r"Sequence 's2' is 1234 \(int\)"):
        pp.encode_kmers(["ACGT", 1234], k=3, names=["s1", "s2"])


def test_encode_kmers_of_no_sequences_is_empty():
    ids, n_kmers = pp.encode_kmers([], k=3)
    assert ids.shape == (0,) and ids.dtype == np.int64
    assert n_kmers.shape == (0,)
    assert pp.tokenize([], k=3)["input_ids"].shape[0] == 0


def test_names_of_another_length_refused():
    with pytest.raises(ValueError, match="names has 1 entries but there are 2 sequences"):
        pp.check_sequences(["ACGT", "AC"], 3, names=["a"])


def test_seq2kmer_checks_k():
    assert pp.seq2kmer("ATCGGA", 3) == "ATC TCG CGG GGA"
    for k in (0, 2, 3.0):
        with pytest.raises(ValueError, match=r"k=.* is not supported.*3, 4, 5 or 6"):
            pp.seq2kmer("ACGT", k)


def test_tokenize_dtype_too_small_for_the_ids_refused():
    # k=6 ids reach 4 + 4**6 = 4100, which int8 would wrap around
    with pytest.raises(
        ValueError, match=r"dtype=int8 cannot hold the token ids of k=6 \(0 to 4100\)"
    ):
        pp.tokenize(["GGGGGGG"], k=6, dtype=np.int8)
    with pytest.raises(ValueError, match="k=4"):
        pp.tokenize(["GGGGG"], k=4, dtype=np.uint8)  # GGGG is 5 + 255 = 260
    with pytest.raises(ValueError, match="float32"):
        pp.tokenize(["GGGGG"], k=3, dtype=np.float32)
    # k=3 ids reach 68: uint8 holds them; GGG = 5 + 3*16 + 3*4 + 3 = 68
    out = pp.tokenize(["GGGG"], k=3, dtype=np.uint8)["input_ids"]
    assert out.dtype == np.uint8
    assert out.tolist() == [[2, 68, 68, 3]]


@pytest.mark.parametrize("max_len", [5.5, "512", True])
def test_tokenize_max_len_must_be_an_integer(max_len):
    with pytest.raises(ValueError, match=r"max_len=.* must be an integer >= 3"):
        pp.tokenize(["ACGTACGT"], k=3, max_len=max_len)


def test_encode_kmers_reads_a_generator_once():
    ids, n_kmers = pp.encode_kmers((s for s in ["ACGTA", "NAAA"]), k=3)
    # ACG = 5 + 0*16 + 2*4 + 3 = 16, CGT = 5 + 2*16 + 3*4 + 1 = 50, GTA = 5 + 3*16 + 1*4 + 0
    # = 57, NAA = [UNK] = 1, AAA = 5
    assert ids.tolist() == [16, 50, 57, 1, 5]
    assert n_kmers.tolist() == [3, 2]


def test_cache_dir_is_the_fasta_subfolder_of_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OMICFORMER_CACHE_DIR", str(tmp_path / "root"))
    assert pp.cache_dir() == tmp_path / "root" / "fasta"
    monkeypatch.delenv("OMICFORMER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pp.cache_dir() == tmp_path / "xdg" / "omicformer" / "fasta"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", None):  # an empty XDG_CACHE_HOME counts as unset (XDG base dir spec)
        if unset is None:
            monkeypatch.delenv("XDG_CACHE_HOME")
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", unset)
        # it was the relative path omicformer/fasta, in the working directory
        assert pp.cache_dir() == tmp_path / "home" / ".cache" / "omicformer" / "fasta"
