"""``omicformer scgpt annotate`` and ``omicformer scgpt integrate``: the files in and out."""

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from omicformer.cli import main
from omicformer.scgpt import tl

pytestmark = pytest.mark.usefixtures("one_thread")
FIT = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def pretrained_dir(clf_pretrained, tmp_path_factory):
    """The tiny stand-in for a pretrained model, saved as a ``--model`` folder."""
    path = tmp_path_factory.mktemp("pretrained") / "model"
    clf_pretrained.save(path)
    return str(path)


@pytest.fixture(scope="module")
def two_batch_dir(two_batch_pretrained, tmp_path_factory):
    path = tmp_path_factory.mktemp("two_batch") / "model"
    two_batch_pretrained.save(path)
    return str(path)


def _files(tmp_path, **adatas):
    paths = {}
    for name, a in adatas.items():
        paths[name] = str(tmp_path / f"{name}.h5ad")
        a.write_h5ad(paths[name])
    return paths


def test_annotate_cli_writes_the_functions_labels_and_a_reusable_model(
    tmp_path, pretrained_dir, clf_ref_query, capsys
):
    from omicformer.scgpt.model import ScGPTClassifier

    ref, query = clf_ref_query
    f = _files(tmp_path, ref=ref, query=query)
    out, saved = str(tmp_path / "out" / "labelled.h5ad"), str(tmp_path / "clf")
    args = ["--label-key", "cell_type", "--model", pretrained_dir, "--max-epochs", "3",
            "--n-models", "1", "--random-state", "1", *FIT]  # fmt: skip
    argv = ["scgpt", "annotate", f["query"], out, "--reference", f["ref"], *args]
    assert main([*argv, "--save-model", saved]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: obs['scgpt_cell_type'] and obs['scgpt_cell_type_confidence']" in printed
    assert f"saved the fine-tuned model to {saved}" in printed

    got = ad.read_h5ad(out)
    expected = tl.annotate(query, ref, label_key="cell_type", model=pretrained_dir, max_epochs=3,
                           n_models=1, random_state=1, device="cpu", progress=False,
                           copy=True)  # fmt: skip
    cols = ["scgpt_cell_type", "scgpt_cell_type_confidence"]
    pd.testing.assert_frame_equal(got.obs[cols], expected.obs[cols])
    assert got.uns["scgpt"]["scgpt_cell_type"]["params"]["max_epochs"] == 3
    np.testing.assert_array_equal(got.X.toarray(), query.X.toarray())  # the query's data kept
    # "(N cells; K labels; U Unknown)", counted here from the file
    labels = got.obs["scgpt_cell_type"].astype(str)
    assert f"({query.n_obs} cells; {labels.nunique()} labels; 0 Unknown)" in printed

    # the saved classifier labels further data without retraining: the same labels
    assert isinstance(ScGPTClassifier.load(saved), ScGPTClassifier)
    again = str(tmp_path / "again.h5ad")
    argv = ["scgpt", "annotate", f["query"], again, "--reference", f["ref"], "--label-key",
            "cell_type", "--model", saved, "--min-confidence", "0.99", "--random-state", "1",
            *FIT]  # fmt: skip
    assert main(argv) == 0
    reused = ad.read_h5ad(again).obs
    np.testing.assert_allclose(
        reused["scgpt_cell_type_confidence"], got.obs["scgpt_cell_type_confidence"], rtol=1e-5
    )
    sure = got.obs["scgpt_cell_type_confidence"] >= 0.99
    assert (reused["scgpt_cell_type"].astype(str)[~sure] == "Unknown").all()
    assert (reused["scgpt_cell_type"].astype(str) == labels)[sure].all()
    n_unknown = int((~sure).sum())
    assert f"; {n_unknown} Unknown)" in capsys.readouterr().out


def test_annotate_cli_without_reference_and_with_knn(tmp_path, pretrained_dir, clf_ref_query):
    ref, query = clf_ref_query
    both = ad.concat([ref, query])
    both.obs["partial"] = both.obs["cell_type"].astype(object)
    both.obs.loc[query.obs_names, "partial"] = np.nan
    f = _files(tmp_path, both=both)
    out = str(tmp_path / "out.h5ad")
    argv = ["scgpt", "annotate", f["both"], out, "--label-key", "partial", "--method", "knn",
            "--model", pretrained_dir, "--key-added", "knn_labels", "--backed", *FIT]  # fmt: skip
    assert main(argv) == 0
    got = ad.read_h5ad(out).obs
    expected = tl.annotate(both, label_key="partial", method="knn", model=pretrained_dir,
                           key_added="knn_labels", device="cpu", progress=False,
                           copy=True).obs  # fmt: skip
    pd.testing.assert_series_equal(got["knn_labels"], expected["knn_labels"])
    assert (got.loc[ref.obs_names, "knn_labels"] == ref.obs["cell_type"]).all()


def test_integrate_cli_writes_the_functions_embedding_and_saves_the_model(
    tmp_path, two_batch_dir, two_batches, capsys
):
    from omicformer.scgpt.model import ScGPTIntegration

    a = two_batches()
    f = _files(tmp_path, cells=a)
    out, saved = str(tmp_path / "integrated.h5ad"), str(tmp_path / "integration")
    argv = ["scgpt", "integrate", f["cells"], out, "--batch-key", "batch", "--model",
            two_batch_dir, "--max-epochs", "1", "--batch-size", "16", "--save-model", saved,
            *FIT]  # fmt: skip
    assert main(argv) == 0
    z = ad.read_h5ad(out).obsm["X_scgpt_integrated"]
    expected = tl.integrate(a, batch_key="batch", model=two_batch_dir, max_epochs=1,
                            batch_size=16, device="cpu", progress=False, copy=True)  # fmt: skip
    np.testing.assert_allclose(z, expected.obsm["X_scgpt_integrated"], atol=1e-5)
    printed = capsys.readouterr().out
    assert f"wrote {out}: obsm['X_scgpt_integrated'] {z.shape}" in printed
    assert f"saved the fine-tuned model to {saved}" in printed
    loaded = ScGPTIntegration.load(saved)
    assert loaded.module.config.do_dab and loaded.module.config.num_batch_labels == 2


@pytest.mark.filterwarnings("ignore:Element '/x' was written without encoding metadata")
def test_cli_training_errors_are_one_line_and_come_first(
    cli_error, tmp_path, pretrained_dir, clf_ref_query, clf_trained, monkeypatch
):
    ref, query = clf_ref_query
    f = _files(tmp_path, ref=ref, query=query)
    out = str(tmp_path / "out.h5ad")
    base = ["--model", pretrained_dir, *FIT]
    ann = ["scgpt", "annotate", f["query"], out, "--reference", f["ref"], *base]
    prefix = "omicformer scgpt annotate: error: "

    def not_called(*args, **kwargs):
        raise AssertionError("the options are checked before any training")

    with monkeypatch.context() as m:
        m.setattr(tl, "annotate", not_called)
        m.setattr(tl, "integrate", not_called)
        msg = cli_error([*ann, "--label-key", "cell_type", "--method", "knn",
                         "--save-model", str(tmp_path / "m")])  # fmt: skip
        assert msg == f"{prefix}--save-model needs --method finetune: --method knn trains no model."
        clf_trained.save(tmp_path / "taken")
        msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", str(tmp_path / "taken")])
        assert msg == (
            f"{prefix}--save-model {str(tmp_path / 'taken')!r} already holds a saved model; pass "
            "--overwrite to replace it, or choose a new folder."
        )
        (tmp_path / "file").write_text("x")
        msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", str(tmp_path / "file")])
        assert msg == f"{prefix}--save-model {str(tmp_path / 'file')!r} is a file; pass a folder."
        msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", pretrained_dir,
                         "--overwrite"])  # fmt: skip
        assert msg.startswith(f"{prefix}--save-model {pretrained_dir!r} is the --model folder")
        # a folder under a file, or the output file itself: refused before the work (they
        # failed after the training, with a traceback or after writing the output)
        under = str(tmp_path / "file" / "clf")
        msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", under])
        assert (
            msg
            == f"{prefix}cannot save the model to {under!r}: {str(tmp_path / 'file')!r} is a file."
        )
        # a folder not writable (a read-only mount): refused before the work, not after it
        # with a traceback and the output written; the root folder too (no StopIteration)
        ro = tmp_path / "ro"
        ro.mkdir()
        access = os.access
        m.setattr(os, "access", lambda p, mode, *a, **k: (
            Path(p) not in (ro, Path("/")) or not mode & os.W_OK) and access(p, mode, *a, **k))  # fmt: skip
        for folder, above in ((ro / "clf", ro), (ro, ro), (Path("/"), Path("/"))):
            msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", str(folder)])
            assert msg == (f"{prefix}cannot save the model to {str(folder)!r}: the folder "
                           f"{str(above)!r} is not writable.")  # fmt: skip
        m.setattr(os, "access", access)
        # a file of the command named as the saved model's AnnData in the folder: saving the
        # model replaced it (the output was written, then deleted, and the command said "wrote")
        taken_adata = str(tmp_path / "taken" / "adata.h5ad")
        msg = cli_error(["scgpt", "annotate", f["query"], taken_adata, "--reference", f["ref"],
                         *base, "--label-key", "cell_type", "--save-model",
                         str(tmp_path / "taken"), "--overwrite"])  # fmt: skip
        assert msg.startswith(f"{prefix}the output {taken_adata!r} is the adata.h5ad of")
        (tmp_path / "taken" / "adata.h5ad").write_bytes(Path(f["query"]).read_bytes())
        msg = cli_error(["scgpt", "annotate", taken_adata, out, "--reference", f["ref"], *base,
                         "--label-key", "cell_type", "--save-model", str(tmp_path / "taken"),
                         "--overwrite"])  # fmt: skip
        assert msg.startswith(f"{prefix}the input {taken_adata!r} is the adata.h5ad of")
        assert (tmp_path / "taken" / "adata.h5ad").exists()
        # an ensemble's member folders are replaced whole: any file in a subfolder
        member_file = str(tmp_path / "taken" / "member_0" / "labelled.h5ad")
        msg = cli_error(["scgpt", "annotate", f["query"], member_file, "--reference", f["ref"],
                         *base, "--label-key", "cell_type", "--save-model",
                         str(tmp_path / "taken"), "--overwrite"])  # fmt: skip
        assert msg.startswith(f"{prefix}the output {member_file!r} is in the folder 'member_0' of")
        for inside in (out, str(tmp_path / "out.h5ad" / "clf")):
            msg = cli_error([*ann, "--label-key", "cell_type", "--save-model", inside])
            assert msg.startswith(f"{prefix}--save-model {inside!r} is the output file {out!r}")
        # not an AnnData, though HDF5: the one-line error
        import h5py

        with h5py.File(tmp_path / "bare.h5ad", "w") as h5:
            h5["x"] = 1
        for backed in ([], ["--backed"]):
            msg = cli_error(["scgpt", "annotate", f["query"], out, "--reference",
                             str(tmp_path / "bare.h5ad"), "--label-key", "cell_type", *base,
                             *backed])  # fmt: skip
            assert msg.startswith(f"{prefix}cannot read {str(tmp_path / 'bare.h5ad')!r} as "
                                  "AnnData (.h5ad): ")  # fmt: skip
        missing = str(tmp_path / "no.h5ad")
        msg = cli_error(["scgpt", "annotate", f["query"], out, "--reference", missing,
                         "--label-key", "cell_type", *base])  # fmt: skip
        assert msg == f"{prefix}--reference file {missing!r} does not exist."
        msg = cli_error([*ann, "--label-key", "a/b"])
        assert msg.startswith(f"{prefix}--key-added 'scgpt_a/b' contains '/'")
        msg = cli_error(["scgpt", "integrate", f["query"], out, "--batch-key", "b",
                         "--model", "nowhere/"])  # fmt: skip
        assert msg.startswith("omicformer scgpt integrate: error: --model 'nowhere/' is neither")
    # the library's own checks end the command with one line too, and write nothing
    msg = cli_error([*ann, "--label-key", "celltype"])
    assert msg.startswith(f"{prefix}") and "'celltype'" in msg and "cell_type" in msg
    msg = cli_error([*ann, "--label-key", "cell_type", "--min-confidence", "2"])
    assert msg.startswith(prefix) and "min_confidence" in msg
    msg = cli_error(["scgpt", "integrate", f["query"], out, "--batch-key", "batch", *base])
    assert msg.startswith("omicformer scgpt integrate: error: ") and "'batch'" in msg
    assert not (tmp_path / "out.h5ad").exists() and not (tmp_path / "m").exists()


def test_save_model_default_is_a_folder_name_and_tilde_is_home(
    tmp_path, pretrained_dir, clf_ref_query, monkeypatch
):
    # "--save-model default" was taken for the built-in model when --model is 'default'; a
    # quoted "~/clf" saved the weights under the home folder and the probe under "./~/clf"
    from omicformer.scgpt.model import ScGPTClassifier

    ref, query = clf_ref_query
    f = _files(tmp_path, ref=ref, query=query)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "default").mkdir()
    calls = []

    def annotate(adata, reference, **kw):  # the labels, and the model to save
        adata.obs[kw["key_added"]] = pd.Categorical(["T"] * adata.n_obs)
        calls.append(kw)
        return _Saves()

    monkeypatch.setattr(tl, "annotate", annotate)
    argv = ["scgpt", "annotate", f["query"], "out.h5ad", "--reference", f["ref"],
            "--label-key", "cell_type", *FIT]  # fmt: skip
    assert main([*argv, "--save-model", "default"]) == 0 and calls[-1]["model"] == "default"
    monkeypatch.undo()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--model", pretrained_dir, "--max-epochs", "1", "--n-models", "1",
                 "--save-model", "~/clf", "--overwrite"]) == 0  # fmt: skip
    assert (tmp_path / "home" / "clf" / "probe.safetensors").is_file()
    assert not (tmp_path / "~").exists()
    assert ScGPTClassifier.load(tmp_path / "home" / "clf").probe_ is not None


class _Saves:
    """A stand-in for the fitted model returned by tl.annotate: records its save."""

    def save(self, path, overwrite=False):
        self.saved = path


def test_help_says_what_each_command_reads(capsys):
    for command, reference in (("annotate", True), ("integrate", False), ("embed", False)):
        with pytest.raises(SystemExit):
            main(["scgpt", command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert ("read the input and the reference backed" in text) is reference
        assert ("--save-model" in text) is (command != "embed")


def test_stdout_holds_only_the_result_lines(tmp_path, two_batch_dir, two_batches, capsys):
    # Lightning's training bar (Rich) drew on stdout, between the result lines a pipeline reads
    f = _files(tmp_path, cells=two_batches())
    argv = ["scgpt", "integrate", f["cells"], str(tmp_path / "out.h5ad"), "--batch-key", "batch",
            "--model", two_batch_dir, "--max-epochs", "1", "--batch-size", "16",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"wrote {tmp_path / 'out.h5ad'}: obsm['X_scgpt_integrated'] "
                                "(72, 32)"]  # fmt: skip
    assert "Epoch" in err
