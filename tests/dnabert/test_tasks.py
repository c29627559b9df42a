import numpy as np
import pandas as pd
import pytest

from omicformer import datasets
from omicformer.dnabert import tasks
from omicformer.dnabert.tasks import _baseline, _common, _tfbs


@pytest.fixture(scope="module")
def promoter():
    return tasks.promoter_task()


@pytest.fixture(scope="module")
def promoter_gc():
    return tasks.promoter_task(gc_matched=True)


def _check_common(df, length=None):
    assert list(df.columns[:5]) == ["sequence", "label", "split", "source", "group"]
    assert df["sequence"].str.fullmatch("[ACGTN]+").all()
    assert set(df["split"]) == {"train", "valid", "test"}
    if length is not None:
        assert (df["sequence"].str.len() == length).all()
    # no leakage: every source region / block / locus lies in exactly one split, and no
    # sequence is in two splits (a few bundled dm3 regions are copies of one another)
    assert (df.groupby("group")["split"].nunique() == 1).all()
    assert (df.groupby("sequence")["split"].nunique() == 1).all()


def test_promoter_task(promoter):
    df = promoter
    _check_common(df, 300)
    assert set(df["source"]) == {"dm3_proximal", "dm3_distal", "ce2_background"}
    assert (df["label"] == (df["source"] == "dm3_proximal")).all()
    # balanced per split, half of the negatives distal, half background
    counts = df.groupby(["split", "label"]).size().unstack()
    assert (counts[0] == counts[1]).all()
    assert abs((df["source"] == "dm3_distal").sum() - (df["source"] == "ce2_background").sum()) <= 3
    # one proximal window per region, whose distal window (if used) shares its split
    dm3 = df[df["source"] != "ce2_background"]
    assert dm3[dm3["label"] == 1]["group"].is_unique
    assert dm3.groupby("group")["split"].nunique().max() == 1
    assert len(df[df.split == "train"]) > 7 * len(df[df.split == "test"])


def test_promoter_windows_match_source(promoter):
    regions = datasets.dm3_upstream().set_index("name")
    seq = datasets.ce_chrx_sequence()
    for row in promoter.groupby("source").head(5).itertuples():
        if row.source == "ce2_background":
            assert row.sequence == seq[row.start : row.end]
            continue
        region = regions.loc[row.group.removeprefix("dm3:")]
        if row.source == "dm3_proximal":
            assert row.sequence == region.sequence[-300:]
        else:
            assert row.sequence == region.sequence[:300]
        # window coordinates agree with the region's strand and orientation
        offset = row.start - region.start if region.strand == "+" else region.end - row.end
        assert region.sequence[offset : offset + 300] == row.sequence


def test_promoter_distal_away_from_other_tss(promoter):
    regions = datasets.dm3_upstream().set_index("name")
    distal = promoter[promoter["source"] == "dm3_distal"]
    for group in distal["group"]:
        other = regions.loc[group.removeprefix("dm3:"), "other_tss"]
        assert not any(-500 <= t < 800 for t in other)


def test_promoter_gc_matched(promoter, promoter_gc):
    df = promoter_gc
    _check_common(df, 300)
    edges = np.linspace(0, 1, 21)[1:-1]
    df = df.assign(bin=np.digitize(df["gc"], edges))
    counts = df.groupby(["split", "bin", "label"]).size().unstack(fill_value=0)
    assert (counts[0] == counts[1]).all()  # exact per-split, per-bin match
    for split, g in df.groupby("split"):
        pos, neg = g[g.label == 1]["gc"], g[g.label == 0]["gc"]
        assert abs(pos.mean() - neg.mean()) < 0.01, split
        assert abs(pos.std() - neg.std()) < 0.01, split
    # several distal windows per region may be used, all in that region's split
    assert (df.groupby("group")["split"].nunique() == 1).all()


@pytest.mark.parametrize("gc_matched", [False, True])
def test_promoter_splits_share_no_sequence_and_stay_balanced(gc_matched):
    # seed 1 put 3 copies of a positive into train and test; a copy leaves the later split
    # with a window of the other label, so each split (and GC bin) stays paired
    df = tasks.promoter_task(random_state=1, gc_matched=gc_matched)
    seqs = {s: set(df.loc[df["split"] == s, "sequence"]) for s in ("train", "valid", "test")}
    assert not seqs["train"] & seqs["test"] and not seqs["train"] & seqs["valid"]
    assert not seqs["valid"] & seqs["test"]
    counts = df.groupby(["split", "label"]).size().unstack()
    assert (counts[0] == counts[1]).all()
    assert counts.loc["train", 1] == 4800  # train is never changed


def test_promoter_deterministic(promoter):
    again = tasks.promoter_task(random_state=0)
    pd.testing.assert_frame_equal(promoter, again)
    other = tasks.promoter_task(random_state=1)
    assert not other["sequence"].equals(promoter["sequence"])


def test_region_splits_shared_across_tasks(promoter):
    tf = tasks.tfbs_task(n_per_class=300, background="dm3")
    split_of = dict(zip(promoter["group"], promoter["split"], strict=True))
    shared = [g for g in tf["group"] if g in split_of]
    assert shared
    assert all(
        split_of[g] == s for g, s in zip(tf["group"], tf["split"], strict=True) if g in split_of
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 5000}, "length"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"background_fraction": 2}, "background_fraction"),
        (
            {"length": 700, "background_fraction": 1.0},
            r"the train split needs 4800 C. elegans windows of 700 bp but its blocks hold 4544",
        ),
        ({"gc_matched": True, "gc_bins": 0}, "gc_bins=0 must be an integer >= 1"),
        ({"length": 300.5}, "length=300.5 must be an integer"),
    ],
)
def test_promoter_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.promoter_task(**kwargs)


def test_tfbs_task():
    df = tasks.tfbs_task("MA0114", n_per_class=500, random_state=3)
    _check_common(df, 101)
    assert (df["motif"] == "MA0114.5").all()
    counts = df.groupby(["split", "label"]).size()
    assert counts.to_dict() == {
        ("test", 0): 50,
        ("test", 1): 50,
        ("train", 0): 400,
        ("train", 1): 400,
        ("valid", 0): 50,
        ("valid", 1): 50,
    }
    seq = datasets.ce_chrx_sequence()
    for row in df.itertuples():
        original = seq[row.start : row.end]
        if row.label == 0:
            assert row.sequence == original
            assert row.site_offset == -1
        else:
            o, w = row.site_offset, len(row.site)
            assert w == 9
            assert row.sequence[o : o + w] == row.site
            assert row.sequence[:o] == original[:o]
            assert row.sequence[o + w :] == original[o + w :]
    # sampled sites follow the PFM: most positions agree with its consensus
    pfm = datasets.jaspar_motifs()["MA0114.5"]
    consensus = "".join("ACGT"[i] for i in pfm.argmax(axis=0))
    fwd = df[(df.label == 1) & (df.site_strand == "+")]["site"]
    agree = np.mean([[a == b for a, b in zip(s, consensus, strict=True)] for s in fwd])
    assert agree > 0.6
    pd.testing.assert_frame_equal(df, tasks.tfbs_task("MA0114", n_per_class=500, random_state=3))


def test_tfbs_motif_resolution():
    assert _tfbs._resolve_motif("HNF4A")[0] == "MA0114.5"
    assert _tfbs._resolve_motif("MA0114.4")[0] == "MA0114.4"
    assert _tfbs._resolve_motif("ctcf")[0] == "MA0139.2"
    # JASPAR ids in any case (the bundled ids are upper case)
    assert _tfbs._resolve_motif("ma0114")[0] == "MA0114.5"  # base id: latest version
    assert _tfbs._resolve_motif("ma0114.4")[0] == "MA0114.4"
    assert _tfbs._resolve_motif("Ma0139.2")[0] == "MA0139.2"
    with pytest.raises(ValueError, match=r"Unknown motif 'ma9999'.*MA0114\.5 \(HNF4A\)"):
        tasks.tfbs_task("ma9999")
    name, _ = _tfbs._resolve_motif(np.eye(4))
    assert name == "custom"
    with pytest.raises(ValueError, match=r"MA0139\.2 \(CTCF\)"):
        tasks.tfbs_task("NOPE")
    with pytest.raises(ValueError, match="shorter"):
        tasks.tfbs_task("MA0138", length=10)


@pytest.mark.parametrize(
    ("kwargs", "held"),
    [({"length": 5000}, 80), ({"split_fractions": (0.9, 0.1, 0)}, 0)],  # numpy's errors before
)
def test_hnf4a_real_check_with_too_few_test_windows_says_so(kwargs, held):
    with pytest.raises(ValueError, match=rf"test blocks hold {held} background windows .* 142"):
        tasks.hnf4a_real_check(**kwargs)


def test_hnf4a_real_check():
    df = tasks.hnf4a_real_check()
    assert df.shape[0] == 142
    assert (df["split"] == "test").all()
    pos = df[df.label == 1]
    assert sorted(pos["site"]) == sorted(datasets.hnf4a_sites())
    for row in pos.itertuples():
        assert row.sequence[row.site_offset : row.site_offset + 13] == row.site
    # windows come from the ce2 blocks that tfbs_task (same seed) puts in its test split
    blocks = _common._ce2_windows(101, 0, (0.8, 0.1, 0.1)).groupby("group")["split"].first()
    assert (blocks[df["group"]] == "test").all()
    tf = tasks.tfbs_task(n_per_class=200)
    assert not set(df["group"]) & set(tf[tf.split != "test"]["group"])


@pytest.mark.parametrize("length", [12, 0, 20.0])
def test_hnf4a_real_check_length_holds_a_site(length):
    # the 71 sites are 13 bp (12 failed inside numpy with "high <= 0")
    with pytest.raises(ValueError, match=rf"length={length!r} must be an integer >= 13"):
        tasks.hnf4a_real_check(length)


def test_tfbs_task_length_must_be_an_integer():
    with pytest.raises(ValueError, match=r"length=50.5 must be an integer >= 1"):  # a TypeError
        tasks.tfbs_task(length=50.5, n_per_class=10)


# --- splice sites on a hand-made genome -------------------------------------------------------
#
# chr1 is 120 x "C" with dinucleotides written at these 0-based positions:
#   gene G1 (+), exons [20,30) and [50,60): donor GT at 30, acceptor AG at 48 (boundary 50),
#       decoys GT at 40 (boundary 40) and AG at 44 (boundary 46)
#   gene G2 (-), exons [70,80) and [95,110): on the genome the donor reads AC at 93 (boundary
#       95), the acceptor CT at 80 (boundary 80); decoys AC at 100 (boundary 102), CT at 86
#       (boundary 86)
# chr2 holds a single-exon gene (no sites).
GENOME = {
    "chr1": {30: "GT", 48: "AG", 40: "GT", 44: "AG", 93: "AC", 80: "CT", 100: "AC", 86: "CT"},
    "chr2": {},
}
GTF = [
    ("chr1", 21, 30, "+", "G1", "T1"),
    ("chr1", 51, 60, "+", "G1", "T1"),
    ("chr1", 23, 30, "+", "G1", "T1b"),  # same intron as T1: sites must not repeat
    ("chr1", 51, 58, "+", "G1", "T1b"),
    ("chr1", 71, 80, "-", "G2", "T2"),
    ("chr1", 96, 110, "-", "G2", "T2"),
    ("chr2", 11, 40, "+", "G3", "T3"),
]


@pytest.fixture
def tiny_genome(tmp_path):
    fasta = tmp_path / "genome.fa"
    with open(fasta, "w") as fh:
        for chrom, marks in GENOME.items():
            seq = list("C" * 120)
            for pos, dinuc in marks.items():
                seq[pos : pos + 2] = dinuc
            fh.write(f">{chrom}\n{''.join(seq)}\n")
    gtf = tmp_path / "genes.gtf"
    with open(gtf, "w") as fh:
        fh.write("#!comment\n")
        for chrom, start, end, strand, gene, tx in GTF:
            attrs = f'gene_id "{gene}"; transcript_id "{tx}"; gene_type "protein_coding";'
            fh.write(f"{chrom}\ttest\texon\t{start}\t{end}\t.\t{strand}\t.\t{attrs}\n")
            fh.write(f"{chrom}\ttest\tCDS\t{start}\t{end}\t.\t{strand}\t0\t{attrs}\n")
    return gtf, fasta


def test_splice_sites_exact_windows(tiny_genome):
    gtf, fasta = tiny_genome
    df = tasks.splice_site_task(gtf, fasta, window=8)
    got = {
        (r.strand, r.boundary, r.site_type): (r.sequence, r.label, r.start, r.end, r.dinucleotide)
        for r in df.itertuples()
    }
    expected = {
        # + strand: genome[g-4:g+4] as is
        ("+", 30, "donor"): ("CCCCGTCC", 1, 26, 34, "GT"),
        ("+", 50, "acceptor"): ("CCAGCCCC", 2, 46, 54, "AG"),
        ("+", 40, "gt_decoy"): ("CCCCGTCC", 0, 36, 44, "GT"),
        ("+", 46, "ag_decoy"): ("CCAGCCAG", 0, 42, 50, "AG"),
        # - strand: reverse complement of genome[g-4:g+4]
        ("-", 95, "donor"): ("GGGGGTGG", 1, 91, 99, "GT"),  # genome CCACCCCC
        ("-", 80, "acceptor"): ("GGAGGGGG", 2, 76, 84, "AG"),  # genome CCCCCTCC
        ("-", 102, "gt_decoy"): ("GGGGGTGG", 0, 98, 106, "GT"),  # genome CCACCCCC
        ("-", 86, "ag_decoy"): ("GGAGGGGG", 0, 82, 90, "AG"),  # genome CCCCCTCC
    }
    assert got == expected
    assert len(df) == 8  # T1b repeats T1's sites; the single-exon gene adds none
    assert set(df["gene_id"]) == {"G1", "G2"}
    assert (df.groupby("group")["split"].nunique() == 1).all()
    assert set(df["group"]) == {"chr1:20-60", "chr1:70-110"}


def test_splice_options(tiny_genome):
    gtf, fasta = tiny_genome
    none = tasks.splice_site_task(gtf, fasta, window=8, negatives_per_site=0)
    assert set(none["label"]) == {1, 2}
    with pytest.raises(ValueError, match="No exon lines"):
        tasks.splice_site_task(gtf, fasta, window=8, chroms=["chr9"])
    with pytest.raises(ValueError, match="even"):
        tasks.splice_site_task(gtf, fasta, window=7)
    # windows running past the contig start are skipped, not truncated
    wide = tasks.splice_site_task(gtf, fasta, window=100)
    assert (wide["start"] >= 0).all()
    assert (wide["sequence"].str.len() == 100).all()
    assert len(wide) == 1  # only the + acceptor (boundary 50) fits: window [0, 100)
    assert wide["boundary"].tolist() == [50]
    with pytest.raises(ValueError, match="No splice-site window"):
        tasks.splice_site_task(gtf, fasta, window=400)


def test_splice_chroms_as_one_name(tiny_genome):
    gtf, fasta = tiny_genome
    # a single name is one chromosome (it was read as {"c", "h", "r", "1"}: no exon found)
    one = tasks.splice_site_task(gtf, fasta, window=8, chroms="chr1")
    assert len(one) == 8  # all 8 windows of test_splice_sites_exact_windows are on chr1
    assert set(one["chrom"]) == {"chr1"}
    with pytest.raises(ValueError, match=r"No exon lines .* on \['chr9'\]"):
        tasks.splice_site_task(gtf, fasta, window=8, chroms="chr9")


def test_splice_missing_chrom(tiny_genome, tmp_path):
    _, fasta = tiny_genome
    other = tmp_path / "other.gtf"
    other.write_text('chrZ\tt\texon\t1\t10\t.\t+\t.\tgene_id "g"; transcript_id "t";\n')
    with pytest.raises(ValueError, match="chrZ"):
        tasks.splice_site_task(other, fasta, window=8)


def test_kmer_matrix():
    x = _baseline._kmer_matrix(["ACGTA", "ANGTT", "A"], 2).toarray()
    assert x.shape == (3, 16)
    # ACGT order: AC=1, CG=6, GT=11, TA=12
    assert np.allclose(x[0, [1, 6, 11, 12]], 0.25)
    assert x[0].sum() == pytest.approx(1)
    # k-mers containing N are skipped: GT=11, TT=15
    assert np.allclose(x[1, [11, 15]], 0.5)
    assert x[2].sum() == 0


def test_kmer_baseline_and_metrics(promoter):
    train = promoter[promoter.split == "train"].iloc[:1500]
    test = promoter[promoter.split == "test"]
    prob = tasks.kmer_baseline(train, test, k=4, C=0.01)
    assert prob.shape == (len(test),)
    m = tasks.classification_metrics(test["label"], prob)
    assert set(m) == {"mcc", "f1", "auroc", "accuracy", "n"}
    # held-out windows; measured auroc 0.83, mcc 0.49 (chance: 0.5, 0)
    assert m["auroc"] > 0.7
    assert m["mcc"] > 0.3
    assert m["n"] == len(test)
    auto = tasks.kmer_baseline(train.iloc[:600], test, k=3)  # C chosen by grouped CV
    assert auto.shape == (len(test),)
    assert tasks.classification_metrics(test["label"], auto)["auroc"] > 0.7  # measured 0.79


def test_kmer_baseline_multiclass(promoter, tiny_genome):
    gtf, fasta = tiny_genome
    splice = tasks.splice_site_task(gtf, fasta, window=8)
    prob = tasks.kmer_baseline(splice, splice.iloc[:5], k=2, C=1.0)
    assert prob.shape == (5, 3)  # columns: labels 0, 1, 2
    assert np.allclose(prob.sum(axis=1), 1)
    # three real classes (promoter / distal dm3 / C. elegans), fit on train, scored on test
    code = {"dm3_proximal": 0, "dm3_distal": 1, "ce2_background": 2}
    df = promoter.assign(label=promoter["source"].map(code))
    train, test = df[df.split == "train"].iloc[:1500], df[df.split == "test"]
    prob = tasks.kmer_baseline(train, test, k=3, C=0.1)
    assert prob.shape == (len(test), 3)
    m = tasks.classification_metrics(test["label"], prob)
    # measured: accuracy 0.69, macro F1 0.65, mcc 0.49, auroc 0.84; chance: accuracy 0.5
    # (majority class), macro F1 0.33, mcc 0, auroc 0.5
    assert m["accuracy"] > 0.6
    assert m["f1"] > 0.5
    assert m["mcc"] > 0.35
    assert m["auroc"] > 0.75
    recall = [np.mean(prob[test["label"].to_numpy() == c].argmax(axis=1) == c) for c in range(3)]
    assert min(recall) > 0.25  # every class is found (measured recalls 0.81, 0.38, 0.75)


def test_classification_metrics_values():
    m = tasks.classification_metrics([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.4])
    assert m == {"mcc": 1.0, "f1": 1.0, "auroc": 1.0, "accuracy": 1.0, "n": 4}
    m = tasks.classification_metrics([0, 1, 1, 0], [0.6, 0.9, 0.4, 0.1])
    assert m["mcc"] == pytest.approx(0.0)
    assert m["auroc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="rows"):
        tasks.classification_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="two classes"):
        tasks.kmer_baseline(
            pd.DataFrame({"sequence": ["ACGT"], "label": [1]}), pd.DataFrame({"sequence": ["ACGT"]})
        )


@pytest.mark.parametrize("missing", [np.nan, None])
def test_kmer_baseline_refuses_missing_sequences(missing):
    # "nan" would be read as the string n-a-n: an all-zero feature row, silently
    train = pd.DataFrame(
        {"sequence": ["ACGTACGT", "GGGCCCGG", "ACGTTTAA", "CCCGGGCC"], "label": [0, 1, 0, 1]},
        index=[10, 11, 12, 13],
    )
    broken = train.astype({"sequence": object})
    broken.loc[12, "sequence"] = missing
    with pytest.raises(ValueError, match=r"train_df\['sequence'\] at index 12 is (nan|None)"):
        tasks.kmer_baseline(broken, train, k=2, C=1.0)
    with pytest.raises(ValueError, match=r"test_df\['sequence'\] at index 12 is (nan|None)"):
        tasks.kmer_baseline(train, broken, k=2, C=1.0)


@pytest.mark.parametrize(
    ("n_per_class", "per_split"),
    [
        # shares 4, 0.5, 0.5: floors 4, 0, 0, the one left over to valid (first of the tie)
        (5, {"train": 4, "valid": 1}),
        # shares 12, 1.5, 1.5: floors 12, 1, 1, the one left over to valid (first of the tie)
        (15, {"train": 12, "valid": 2, "test": 1}),
        # shares 5.6, 0.7, 0.7: floors 5, 0, 0, the two left over to valid and test (0.7 > 0.6)
        (7, {"train": 5, "valid": 1, "test": 1}),
    ],
)
def test_tfbs_split_sizes_sum_to_n_per_class(n_per_class, per_split):
    df = tasks.tfbs_task(n_per_class=n_per_class)
    assert df["label"].value_counts().to_dict() == {0: n_per_class, 1: n_per_class}
    for label in (0, 1):
        counts = df[df["label"] == label]["split"].value_counts().to_dict()
        assert counts == per_split


@pytest.mark.parametrize("n_per_class", [0, -3, 2.5])
def test_tfbs_n_per_class_must_be_a_positive_integer(n_per_class):
    with pytest.raises(ValueError, match=rf"n_per_class={n_per_class!r} must be an integer >= 1"):
        tasks.tfbs_task(n_per_class=n_per_class)


@pytest.mark.parametrize("labels", [(1, 2), ("no", "yes"), (-1, 1)])
def test_classification_metrics_of_two_labels_other_than_0_1(labels):
    neg, pos = labels  # prob is that of the larger label, as kmer_baseline returns it
    y = [neg, pos, pos, neg, pos]
    m = tasks.classification_metrics(y, [0.2, 0.9, 0.4, 0.6, 0.7])
    # predicted [neg, pos, neg, pos, pos]: TP 2, FN 1, FP 1, TN 1
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert m["auroc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs in order


def test_classification_metrics_multiclass_labels_in_sorted_order():
    prob = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    m = tasks.classification_metrics(["a", "b", "c", "c"], prob)  # columns a, b, c
    assert m["accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match=r"neither class indices 0\.\.2 nor 3 labels"):
        tasks.classification_metrics(["a", "b", "b", "a"], prob)
