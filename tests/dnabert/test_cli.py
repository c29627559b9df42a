import anndata as ad
import numpy as np
import pandas as pd
import pytest

from omicformer.cli import main
from omicformer.dnabert.model import DNABert


@pytest.fixture
def files(tmp_path, genome, tiny, finetuned):
    fasta, _ = genome
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    adata.var_names = ["chr1:10-90", "chr2:0-60:-"]
    adata.write_h5ad(tmp_path / "in.h5ad")
    mlm = DNABert(k=3, **tiny).save(tmp_path / "mlm")
    clf = finetuned.save(tmp_path / "clf")
    return tmp_path, fasta, mlm, clf


def test_embed_regions_cli(files, capsys):
    tmp, fasta, mlm, _ = files
    argv = ["dnabert", "embed-regions", str(tmp / "in.h5ad"), str(tmp / "out.h5ad")]
    argv += ["--fasta", str(fasta), "--model", str(mlm), "--batch-size", "1", "--device", "cpu"]
    assert main([*argv, "--no-progress"]) == 0
    out = ad.read_h5ad(tmp / "out.h5ad")
    assert out.varm["X_dnabert"].shape == (2, 32)
    assert out.uns["dnabert"]["X_dnabert"]["params"]["k"] == 3
    assert "varm['X_dnabert']" in capsys.readouterr().out


def test_predict_cli_h5ad_and_fasta(files):
    tmp, fasta, _, clf = files
    base = ["--model", str(clf), "--device", "cpu", "--no-progress"]
    argv = [
        "dnabert",
        "predict",
        str(tmp / "in.h5ad"),
        str(tmp / "pred.h5ad"),
        "--fasta",
        str(fasta),
    ]
    assert main(argv + base) == 0
    var = ad.read_h5ad(tmp / "pred.h5ad").var
    assert {"dnabert_prob_at", "dnabert_prob_gc", "dnabert_prediction"} <= set(var)
    seqs = tmp / "seqs.fa"
    seqs.write_text(">s1\nACGTACGTACGGGCCC\n>s2\nAAAATTTTAAAATTTT\n")
    assert main(["dnabert", "predict", str(seqs), str(tmp / "pred.tsv"), *base]) == 0
    table = pd.read_csv(tmp / "pred.tsv", sep="\t", index_col=0)
    assert list(table.index) == ["s1", "s2"]


def test_cli_errors(files):
    tmp, fasta, _, clf = files
    with pytest.raises(SystemExit, match="--fasta GENOME is required"):
        main(["dnabert", "predict", str(tmp / "in.h5ad"), str(tmp / "o.h5ad"), "--model", str(clf)])
    with pytest.raises(SystemExit, match="must end with"):
        main(
            [
                "dnabert",
                "embed-regions",
                str(tmp / "in.h5ad"),
                str(tmp / "o.txt"),
                "--fasta",
                str(fasta),
            ]
        )
    with pytest.raises(SystemExit, match="does not exist"):
        main(
            [
                "dnabert",
                "embed-regions",
                str(tmp / "no.h5ad"),
                str(tmp / "o.h5ad"),
                "--fasta",
                str(fasta),
            ]
        )
    assert not (tmp / "o.h5ad").exists()


def test_cli_input_errors_are_one_line(cli_error, files):
    tmp, fasta, mlm, clf = files
    embed = ["dnabert", "embed-regions", str(tmp / "in.h5ad"), str(tmp / "o.h5ad")]
    base = ["--model", str(mlm), "--device", "cpu", "--no-progress"]
    prefix = "omicformer dnabert embed-regions: error: "

    msg = cli_error([*embed, "--fasta", str(tmp / "no.fa"), *base])
    assert msg == f"{prefix}--fasta file {str(tmp / 'no.fa')!r} does not exist."
    msg = cli_error([*embed, "--fasta", str(fasta), "--model", str(tmp / "no_model")])
    assert msg.startswith(f"{prefix}--model {str(tmp / 'no_model')!r} is neither 'default'")
    # a folder that is no model: the library's FileNotFoundError, as a line
    msg = cli_error([*embed, "--fasta", str(fasta), "--model", str(tmp), "--device", "cpu"])
    assert msg.startswith(prefix) and "is not a DNABERT folder" in msg
    # a chromosome the genome lacks: the library's ValueError, as a line
    bad = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    bad.var_names = ["chr1:10-90", "chr9:0-60"]
    bad.write_h5ad(tmp / "bad.h5ad")
    argv = ["dnabert", "embed-regions", str(tmp / "bad.h5ad"), str(tmp / "o.h5ad")]
    msg = cli_error([*argv, "--fasta", str(fasta), *base])
    assert msg.startswith(f"{prefix}Chromosome 'chr9' of region 'chr9:0-60' is not in")
    msg = cli_error([*embed, "--fasta", str(fasta), *base, "--region-key", "peak"])
    assert msg.startswith(f"{prefix}region_key='peak' is not a column of adata.var")
    (tmp / "text.h5ad").write_text("not HDF5\n")
    argv = ["dnabert", "embed-regions", str(tmp / "text.h5ad"), str(tmp / "o.h5ad")]
    msg = cli_error([*argv, "--fasta", str(fasta), *base])
    assert msg.startswith(f"{prefix}cannot read {str(tmp / 'text.h5ad')!r}")

    pred = ["dnabert", "predict", str(tmp / "no.fa"), str(tmp / "p.csv"), "--model", str(clf)]
    msg = cli_error(pred)
    assert (
        msg
        == f"omicformer dnabert predict: error: input file {str(tmp / 'no.fa')!r} does not exist."
    )
    pred = ["dnabert", "predict", str(tmp / "in.h5ad"), str(tmp / "p.h5ad"), "--model", str(clf)]
    msg = cli_error([*pred, "--fasta", str(tmp / "no.fa")])
    assert msg.startswith("omicformer dnabert predict: error: --fasta file")
    assert not (tmp / "o.h5ad").exists() and not (tmp / "p.h5ad").exists()
    # an input suffix neither FASTA nor data is named (the error blamed the output's suffix)
    (tmp / "seqs.txt").write_text(">s0\nACGTACGTACGTAC\n")
    msg = cli_error(["dnabert", "predict", str(tmp / "seqs.txt"), str(tmp / "p.csv")])
    assert msg.startswith(f"omicformer dnabert predict: error: input {str(tmp / 'seqs.txt')!r} "
                          "must be sequences in a FASTA file")  # fmt: skip
    # a truncated gzip download, as input or --fasta: one line, not a traceback (EOFError)
    import gzip

    (tmp / "cut.fa.gz").write_bytes(
        gzip.compress(b"".join(b">s%d\nACGTACGTAC\n" % i for i in range(50)))[:40]
    )
    pred = ["dnabert", "predict", str(tmp / "cut.fa.gz"), str(tmp / "p.csv"), "--model", str(clf)]
    msg = cli_error([*pred, "--device", "cpu", "--no-progress"])
    assert "cannot be read as a FASTA file: the compressed file ends early" in msg
    msg = cli_error([*embed, "--fasta", str(tmp / "cut.fa.gz"), *base])
    assert msg.startswith(prefix) and "the compressed file ends early" in msg


def test_cli_output_rules(cli_error, files, monkeypatch):
    from omicformer.dnabert import tl

    tmp, fasta, mlm, clf = files
    inp = str(tmp / "in.h5ad")
    base = ["--fasta", str(fasta), "--device", "cpu", "--no-progress", "--batch-size", "1"]
    out = tmp / "new" / "sub" / "out.h5ad"
    # a missing folder is created, up front
    assert main(["dnabert", "embed-regions", inp, str(out), "--model", str(mlm), *base]) == 0
    assert ad.read_h5ad(out).varm["X_dnabert"].shape == (2, 32)
    seqs = tmp / "seqs.fa"
    seqs.write_text(">s1\nACGTACGTACGGGCCC\n>s2\nAAAATTTTAAAATTTT\n")
    table = tmp / "tables" / "pred.csv"
    predict = ["dnabert", "predict", str(seqs), str(table), "--model", str(clf), "--device", "cpu"]
    assert main([*predict, "--no-progress"]) == 0
    assert list(pd.read_csv(table, index_col=0).index) == ["s1", "s2"]

    real = tl.embed_regions, tl.predict

    def not_called(*args, **kwargs):
        raise AssertionError("the output is checked before the model runs")

    monkeypatch.setattr(tl, "embed_regions", not_called)
    monkeypatch.setattr(tl, "predict", not_called)
    # an existing file, the input included, is replaced only with --overwrite
    before = out.read_bytes()
    msg = cli_error(["dnabert", "embed-regions", inp, str(out), "--model", str(mlm), *base])
    assert msg == (
        f"omicformer dnabert embed-regions: error: output {str(out)!r} exists; pass --overwrite "
        "to replace it, or choose a new name."
    )
    assert out.read_bytes() == before
    msg = cli_error([*predict, "--no-progress"])
    assert msg.startswith(f"omicformer dnabert predict: error: output {str(table)!r} exists;")
    before = (tmp / "in.h5ad").read_bytes()
    msg = cli_error(["dnabert", "predict", inp, inp, "--model", str(clf), *base])
    assert msg.startswith(f"omicformer dnabert predict: error: output {inp!r} is the input file")
    assert (tmp / "in.h5ad").read_bytes() == before
    # the data are written back in the input's format (AnnData has no write_h5mu)
    for cmd, model in (("embed-regions", mlm), ("predict", clf)):
        msg = cli_error(["dnabert", cmd, inp, str(tmp / "o.h5mu"), "--model", str(model), *base])
        assert msg.endswith(f"is not a .h5ad file, but {inp} is: the results are written into "
                            "the input's data, in its format. Name the output *.h5ad.")  # fmt: skip
    (tmp / "file").write_text("")
    msg = cli_error(
        ["dnabert", "predict", inp, str(tmp / "file" / "p.h5ad"), "--model", str(clf), *base]
    )
    assert msg.endswith(f"{str(tmp / 'file')!r} is a file, not a folder.")

    monkeypatch.setattr(tl, "embed_regions", real[0])
    monkeypatch.setattr(tl, "predict", real[1])
    argv = ["dnabert", "embed-regions", inp, str(out), "--model", str(mlm), *base, "--overwrite"]
    assert main([*argv, "--key-added", "z"]) == 0
    assert set(ad.read_h5ad(out).varm) == {"z"}
    assert main(["dnabert", "predict", inp, inp, "--model", str(clf), *base, "--overwrite"]) == 0
    var = ad.read_h5ad(tmp / "in.h5ad").var
    assert {"dnabert_prob_at", "dnabert_prob_gc", "dnabert_prediction"} <= set(var)
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []


def test_key_added_with_a_slash_is_refused_before_the_work(cli_error, files):
    # HDF5 reads "a/b" as nested groups: the file was written and anndata could not read it
    tmp, fasta, mlm, clf = files
    inp, out = str(tmp / "in.h5ad"), str(tmp / "o.h5ad")
    base = ["--fasta", str(fasta), "--device", "cpu", "--no-progress", "--key-added", "a/b"]
    for cmd, model in (("embed-regions", mlm), ("predict", clf)):
        msg = cli_error(["dnabert", cmd, inp, out, "--model", str(model), *base])
        assert msg == (
            f"omicformer dnabert {cmd}: error: --key-added 'a/b' contains '/', which the keys of "
            f"output {out!r} cannot hold (HDF5 and zarr read it as nested groups); choose a key "
            "without '/', e.g. 'a_b'."
        )
    assert not (tmp / "o.h5ad").exists()
    # a table of sequences holds such column names
    seqs = tmp / "seqs.fa"
    seqs.write_text(">s1\nACGTACGTACGGGCCC\n")
    argv = ["dnabert", "predict", str(seqs), str(tmp / "p.csv"), "--model", str(clf)]
    assert main([*argv, "--device", "cpu", "--no-progress", "--key-added", "a/b"]) == 0
    assert "a/b_prediction" in pd.read_csv(tmp / "p.csv", index_col=0).columns


def test_predict_cli_fasta_input_refuses_region_options(files, cli_error):
    tmp, fasta, _, clf = files
    seqs = tmp / "seqs.fa"
    seqs.write_text(">s1\nACGTACGTACGGGCCC\n")
    base = ["dnabert", "predict", str(seqs), str(tmp / "pred.csv"), "--model", str(clf)]
    message = cli_error([*base, "--fasta", str(fasta)])
    assert "--fasta is only for the regions of an .h5ad/.h5mu input" in message
    assert "--region-key" in cli_error([*base, "--region-key", "peak"])
    assert not (tmp / "pred.csv").exists()
