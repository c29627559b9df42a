import anndata as ad
import numpy as np
import pytest

from omicformer.cli import main


def test_scgpt_embed_cli(tmp_path, official_ckpt, continuous_adata_factory, capsys):
    path, _, _ = official_ckpt
    a = continuous_adata_factory(12)
    a.write_h5ad(tmp_path / "in.h5ad")
    rc = main(["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"),
               "--model", str(path), "--batch-size", "5", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_scgpt"].shape == (12, 32)
    np.testing.assert_allclose(np.linalg.norm(out.obsm["X_scgpt"], axis=1), 1, rtol=1e-5)
    assert "obsm['X_scgpt'] (12, 32)" in capsys.readouterr().out
    # backed input gives the same numbers
    main(["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out2.h5ad"),
          "--model", str(path), "--backed", "--device", "cpu"])  # fmt: skip
    out2 = ad.read_h5ad(tmp_path / "out2.h5ad")
    np.testing.assert_allclose(out2.obsm["X_scgpt"], out.obsm["X_scgpt"], atol=1e-6)
    # (anndata < 0.12 drops None values from uns when writing, so .get)
    assert out2.uns["scgpt"]["X_scgpt"]["params"].get("batch_key") is None
    # --batch-key reaches tl.embed (recorded; a model without batch layers does not need it)
    a.obs["batch"] = ["a", "b"] * 6
    a.write_h5ad(tmp_path / "in_b.h5ad")
    main(["scgpt", "embed", str(tmp_path / "in_b.h5ad"), str(tmp_path / "out3.h5ad"),
          "--model", str(path), "--batch-key", "batch", "--device", "cpu"])  # fmt: skip
    out3 = ad.read_h5ad(tmp_path / "out3.h5ad")
    assert out3.uns["scgpt"]["X_scgpt"]["params"]["batch_key"] == "batch"
    np.testing.assert_allclose(out3.obsm["X_scgpt"], out.obsm["X_scgpt"], atol=1e-6)
    # --no-progress hides the progress bar (on stderr), as the dnabert commands' flag does
    capsys.readouterr()
    argv = ["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out4.h5ad"),
            "--model", str(path), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0 and "scGPT embed" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_scgpt_embed_cli_input_errors_are_one_line(
    cli_error, tmp_path, official_ckpt, continuous_adata_factory
):
    path, _, _ = official_ckpt
    continuous_adata_factory(6).write_h5ad(tmp_path / "in.h5ad")
    out = str(tmp_path / "out.h5ad")
    base = ["--model", str(path), "--device", "cpu"]
    prefix = "omicformer scgpt embed: error: "

    msg = cli_error(["scgpt", "embed", str(tmp_path / "no.h5ad"), out, *base])
    assert msg == f"{prefix}input file {str(tmp_path / 'no.h5ad')!r} does not exist."
    (tmp_path / "g.fa").write_text(">chr1\nACGT\n")
    msg = cli_error(["scgpt", "embed", str(tmp_path / "g.fa"), out, *base])
    assert msg.startswith(prefix) and "expected .h5ad" in msg
    (tmp_path / "text.h5ad").write_text("not HDF5\n")
    msg = cli_error(["scgpt", "embed", str(tmp_path / "text.h5ad"), out, *base])
    assert msg.startswith(f"{prefix}cannot read {str(tmp_path / 'text.h5ad')!r}")
    msg = cli_error(["scgpt", "embed", str(tmp_path / "in.h5ad"), out, "--model", "no_model/"])
    assert msg.startswith(f"{prefix}--model 'no_model/' is neither 'default' nor")
    # the library's own checks (a KeyError, a ValueError) become error lines too
    msg = cli_error(["scgpt", "embed", str(tmp_path / "in.h5ad"), out, *base, "--layer", "counts"])
    assert msg.startswith(f"{prefix}layer='counts' not found in adata.layers")
    msg = cli_error(["scgpt", "embed", str(tmp_path / "in.h5ad"), out, *base, "--batch-size", "0"])
    assert msg.startswith(prefix) and "batch_size" in msg
    assert not (tmp_path / "out.h5ad").exists()
    # HDF5 reads "a/b" as nested groups: the file was written and anndata could not read it
    for backed in ([], ["--backed"]):
        msg = cli_error(["scgpt", "embed", str(tmp_path / "in.h5ad"), out, *base, *backed,
                         "--key-added", "a/b"])  # fmt: skip
        assert msg == (
            f"{prefix}--key-added 'a/b' contains '/', which the keys of output {out!r} cannot "
            "hold (HDF5 and zarr read it as nested groups); choose a key without '/', e.g. 'a_b'."
        )
    assert not (tmp_path / "out.h5ad").exists()


def test_scgpt_embed_cli_internal_errors_keep_their_traceback(
    cli_error, tmp_path, official_ckpt, continuous_adata_factory, monkeypatch
):
    from omicformer.scgpt import tl

    path, _, _ = official_ckpt
    continuous_adata_factory(6).write_h5ad(tmp_path / "in.h5ad")
    argv = ["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad")]
    argv += ["--model", str(path), "--device", "cpu", "--layer", "counts"]
    assert cli_error(argv).startswith("omicformer scgpt embed: error: layer=")

    def lookup_bug(*args, **kwargs):
        return {}["X_scgpt"]  # a KeyError that is no check of the user's input

    monkeypatch.setattr(tl, "embed", lookup_bug)
    with pytest.raises(KeyError, match="X_scgpt"):
        main(argv)

    def numpy_bug(*args, **kwargs):
        np.zeros(3).reshape(2, 2)

    monkeypatch.setattr(tl, "embed", numpy_bug)
    with pytest.raises(ValueError, match="reshape"):
        main(argv)


def test_scgpt_embed_cli_output_rules(
    cli_error, tmp_path, official_ckpt, continuous_adata_factory, monkeypatch
):
    from omicformer.scgpt import tl

    path, _, _ = official_ckpt
    a = continuous_adata_factory(6)
    a.write_h5ad(tmp_path / "in.h5ad")
    inp = str(tmp_path / "in.h5ad")
    base = ["--model", str(path), "--device", "cpu"]
    prefix = "omicformer scgpt embed: error: "

    # a missing folder is created (as demo --out is), up front
    out = tmp_path / "new" / "sub" / "out.h5ad"
    assert main(["scgpt", "embed", inp, str(out), *base]) == 0
    first = ad.read_h5ad(out).obsm["X_scgpt"]
    assert first.shape == (6, 32)

    real_embed = tl.embed

    def not_called(*args, **kwargs):
        raise AssertionError("the output is checked before embedding")

    monkeypatch.setattr(tl, "embed", not_called)
    # the suffix, as dnabert's commands check it
    msg = cli_error(["scgpt", "embed", inp, str(tmp_path / "out.txt"), *base])
    assert msg == f"{prefix}output {str(tmp_path / 'out.txt')!r} must end with one of ('.h5ad',)."
    assert not (tmp_path / "out.txt").exists()
    # an existing file is replaced only with --overwrite
    before = out.read_bytes()
    msg = cli_error(["scgpt", "embed", inp, str(out), *base])
    assert (
        msg
        == f"{prefix}output {str(out)!r} exists; pass --overwrite to replace it, or choose a new name."
    )
    assert out.read_bytes() == before
    # writing into the input (in place) needs --overwrite too; the input is left as it was
    before = (tmp_path / "in.h5ad").read_bytes()
    msg = cli_error(["scgpt", "embed", inp, str(tmp_path / "." / "in.h5ad"), *base, "--backed"])
    assert msg.startswith(f"{prefix}output {str(tmp_path / '.' / 'in.h5ad')!r} is the input file")
    assert "--overwrite" in msg
    assert (tmp_path / "in.h5ad").read_bytes() == before
    # a folder as output
    (tmp_path / "dir.h5ad").mkdir()
    msg = cli_error(["scgpt", "embed", inp, str(tmp_path / "dir.h5ad"), *base, "--overwrite"])
    assert msg == f"{prefix}output {str(tmp_path / 'dir.h5ad')!r} is a folder; pass a file name."

    monkeypatch.setattr(tl, "embed", real_embed)
    # a write that fails leaves the old output whole, and no temporary file
    before = out.read_bytes()

    def broken_write(self, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(ad.AnnData, "write_h5ad", broken_write)
        with pytest.raises(OSError, match="disk full"):
            main(["scgpt", "embed", inp, str(out), *base, "--overwrite"])
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.h5ad"]
    # --overwrite: replaced; in place (backed): the input gains obsm['X_scgpt'], X unchanged
    assert main(["scgpt", "embed", inp, str(out), *base, "--overwrite", "--key-added", "z"]) == 0
    assert set(ad.read_h5ad(out).obsm) == {"z"}
    assert main(["scgpt", "embed", inp, inp, *base, "--backed", "--overwrite"]) == 0
    updated = ad.read_h5ad(tmp_path / "in.h5ad")
    np.testing.assert_allclose(updated.obsm["X_scgpt"], first, atol=1e-6)
    np.testing.assert_array_equal(updated.X.toarray(), a.X.toarray())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # a symbolic link to the input is written through (it replaced the link with a new file)
    (tmp_path / "link.h5ad").symlink_to(tmp_path / "in.h5ad")
    link = str(tmp_path / "link.h5ad")
    assert main(["scgpt", "embed", inp, link, *base, "--overwrite", "--key-added", "y"]) == 0
    assert (tmp_path / "link.h5ad").is_symlink() and "y" in ad.read_h5ad(inp).obsm
    # a long name the file system takes works (its temporary name went past 255 bytes); a
    # name it does not take is one line, before the work
    long = tmp_path / ("a" * 245 + ".h5ad")
    assert main(["scgpt", "embed", inp, str(long), *base]) == 0 and long.exists()
    too_long = str(tmp_path / ("a" * 260 + ".h5ad"))
    monkeypatch.setattr(tl, "embed", not_called)
    assert cli_error(["scgpt", "embed", inp, too_long, *base]) == (
        f"{prefix}output {too_long!r} cannot be used: File name too long."
    )
