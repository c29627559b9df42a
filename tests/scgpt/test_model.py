"""ScGPT user class: setup, construction, embeddings, save/load round trips, argument checks."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from omicformer.scgpt._vocab import GeneVocab
from omicformer.scgpt.model import ScGPT, load_module
from omicformer.scgpt.module import TransformerModel

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4}
GENES = [f"G{i}" for i in range(50)]


@pytest.fixture
def adata(model_cells) -> ad.AnnData:
    return model_cells()


@pytest.fixture(scope="module")
def trained(model_cells) -> tuple[ScGPT, ad.AnnData]:
    a = model_cells()
    ScGPT.setup_anndata(a, layer="counts", batch_key="batch", labels_key="cell_type")
    model = ScGPT(a, **TINY)
    model.train(
        max_epochs=1, batch_size=32, accelerator="cpu", devices=1, enable_progress_bar=False
    )
    return model, a


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "nope"}, "layer='nope'"),
        ({"batch_key": "nope"}, "batch_key='nope'"),
        ({"labels_key": "nope"}, "labels_key='nope'"),
        ({"gene_key": "nope"}, "gene_key='nope'"),
    ],
)
def test_setup_anndata_unknown_keys_leave_adata_untouched(adata, kwargs, match):
    obs, uns = adata.obs.copy(), dict(adata.uns)
    with pytest.raises(KeyError, match=match):
        ScGPT.setup_anndata(adata, **kwargs)
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert dict(adata.uns) == uns


def test_setup_anndata_on_a_backed_view_says_what_works(adata, tmp_path):
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    view = backed[:10]
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)") as err:
        ScGPT.setup_anndata(view, layer="counts", batch_key="batch")
    assert "adata.copy()" not in str(err.value)  # cannot work on a backed view
    assert list(view.obs.columns) == ["batch", "cell_type"]
    cells = backed[:10].to_memory()  # the advice works
    ScGPT.setup_anndata(cells, layer="counts", batch_key="batch")
    np.testing.assert_array_equal(cells.obs["_scvi_batch"], np.zeros(10))
    backed.file.close()


def test_setup_anndata_on_an_in_memory_view_says_copy(adata):
    view = adata[:10]
    with pytest.raises(ValueError, match=r"view of an AnnData.*adata\[cells\]\.copy\(\)"):
        ScGPT.setup_anndata(view)
    assert "_scvi_batch" not in adata.obs


def test_model_needs_setup(adata):
    with pytest.raises(ValueError, match="setup_anndata"):
        ScGPT(adata, **TINY)


def test_construct_vocab_from_adata_and_repr(adata):
    ScGPT.setup_anndata(adata, labels_key="cell_type")
    model = ScGPT(adata, **TINY, d_hid=48)
    c = model.module.config
    assert len(model.vocab) == 53
    assert model.vocab.genes()[:3] == ["G0", "G1", "G2"]
    assert (c.ntoken, c.d_model, c.nlayers, c.nhead, c.d_hid, c.n_cls) == (53, 32, 2, 4, 48, 3)
    assert c.use_generative_training
    assert c.do_mvc
    np.testing.assert_array_equal(model.gene_ids_, np.arange(50))
    text = repr(model)
    assert text.startswith("ScGPT model")
    assert "50/50 genes" in text
    assert "Not Trained" in text
    assert "dropout: 0.1," in text
    model.module.set_dropout(0.0)  # as train(dropout=0.0) does: the summary follows
    assert "dropout: 0.0," in repr(model)
    # same seed -> same initial weights
    other = ScGPT(adata, **TINY, d_hid=48)
    assert torch.equal(model.module.encoder.embedding.weight, other.module.encoder.embedding.weight)


def test_construct_with_external_vocab_and_gene_key(adata, tmp_path):
    vocab = GeneVocab.from_genes(["X1", *GENES[::-1][:30], "X2"])
    vocab.save_json(tmp_path / "vocab.json")
    adata.var_names = [f"ENSG{i}" for i in range(50)]
    ScGPT.setup_anndata(adata, gene_key="symbol")
    model = ScGPT(adata, **TINY, vocab=tmp_path / "vocab.json")
    assert model.vocab == vocab
    assert (model.gene_ids_ >= 0).sum() == 30
    assert model.gene_ids_[49] == vocab["G49"]
    z = model.get_latent_representation(progress=False)
    assert z.shape == (100, 32)


def test_latent_representation(trained):
    model, a = trained
    z = model.get_latent_representation(progress=False)
    assert z.shape == (100, 32)
    assert z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # another AnnData with extra genes outside the vocabulary (dropped before tokenising)
    other = ad.AnnData(
        sp.hstack([sp.csr_matrix(np.ones((100, 2))), a.layers["counts"]], format="csr"),
        var=pd.DataFrame(index=["U1", "U2", *GENES]),
    )
    other.layers["counts"] = other.X.copy()
    np.testing.assert_allclose(model.get_latent_representation(other, progress=False), z, atol=1e-5)


def test_latent_representation_backed(trained, tmp_path):
    model, a = trained
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    z = model.get_latent_representation(backed, batch_size=16, progress=False)
    np.testing.assert_allclose(
        z, model.get_latent_representation(batch_size=16, progress=False), atol=1e-6
    )


def test_save_load_round_trip(trained, tmp_path):
    model, a = trained
    z = model.get_latent_representation(progress=False)
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["model.safetensors", "omicformer_config.json", "vocab.json"]
    vocab_json = json.loads((tmp_path / "m" / "vocab.json").read_text())
    assert vocab_json["G0"] == 0
    assert vocab_json["<pad>"] == 50
    assert vocab_json["<eoc>"] == 52
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(tmp_path / "m")

    loaded = ScGPT.load(tmp_path / "m", adata=a)
    np.testing.assert_array_equal(loaded.get_latent_representation(progress=False), z)
    assert loaded.is_trained
    assert loaded.max_len == model.max_len
    pd.testing.assert_frame_equal(loaded.history["train_loss"], model.history["train_loss"])
    assert loaded.registry["setup_args"] == model.registry["setup_args"]
    for k, v in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k

    bare = ScGPT.load(tmp_path / "m")  # no AnnData: embed any AnnData with the saved setup
    assert bare.adata is None
    np.testing.assert_array_equal(bare.get_latent_representation(a, progress=False), z)

    module, vocab, config = load_module(tmp_path / "m")
    assert isinstance(module, TransformerModel)
    assert vocab == model.vocab
    assert config["module_config"]["d_model"] == 32
    assert not module.training


def test_save_anndata_and_tl_embed(trained, tmp_path):
    from omicformer.scgpt import tl

    model, a = trained
    model.save(tmp_path / "m", save_anndata=True)
    loaded = ScGPT.load(tmp_path / "m")
    assert loaded.adata is not None
    assert loaded.adata.n_obs == 100
    b = a.copy()
    tl.embed(b, model=str(tmp_path / "m"), layer="counts", progress=False)
    np.testing.assert_array_equal(
        b.obsm["X_scgpt"], model.get_latent_representation(progress=False)
    )


def test_overwriting_a_saved_model_does_not_keep_its_anndata(trained, model_cells, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m", save_anndata=True)  # 100 cells
    other = model_cells()[:30].copy()
    ScGPT.setup_anndata(other, layer="counts")
    ScGPT(other, **TINY).save(tmp_path / "m", overwrite=True)  # without its AnnData
    assert ScGPT.load(tmp_path / "m").adata is None  # not the replaced model's 100 cells
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "adata.h5ad").write_text("a user's file")  # not a saved model
    model.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "adata.h5ad").read_text() == "a user's file"


def test_load_keeps_batch_categories(trained, model_cells, tmp_path):
    model, a = trained
    model.save(tmp_path / "m")
    new = model_cells(a.layers["counts"])[::-1].copy()  # batch "b" now comes first
    loaded = ScGPT.load(tmp_path / "m", adata=new)
    mapping = loaded.registry["field_registries"]["batch"]["state_registry"]["categorical_mapping"]
    assert list(mapping) == ["a", "b"]
    assert new.obs["_scvi_batch"].iloc[0] == 1


@pytest.fixture(scope="module")
def saved_untrained(model_cells, tmp_path_factory):
    """An untrained tiny ScGPT set up with batch and labels, saved: (folder, AnnData)."""
    a = model_cells()
    ScGPT.setup_anndata(a, layer="counts", batch_key="batch", labels_key="cell_type")
    path = tmp_path_factory.mktemp("saved") / "m"
    ScGPT(a, **TINY).save(path)
    return path, a


@pytest.mark.parametrize(
    ("column", "values", "unseen", "known"),
    [
        ("batch", np.repeat(["a", "c"], 50), "'c'", "['a', 'b']"),
        ("cell_type", np.tile(["T", "B", "Mast", "DC"], 25), "['DC', 'Mast']", "['B', 'NK', 'T']"),
    ],
)
def test_load_onto_unseen_categories_names_them(
    saved_untrained, model_cells, snapshot, column, values, unseen, known
):
    path, _ = saved_untrained
    new = model_cells()
    new.obs[column] = values
    snap = snapshot(new)
    with pytest.raises(ValueError, match="load\\(\\) cannot add categories") as err:
        ScGPT.load(path, adata=new)
    msg = str(err.value)
    assert "extend_categories" not in msg
    assert f"adata.obs['{column}']" in msg
    assert unseen in msg and known in msg
    assert "Subset the cells" in msg and "ScGPT.load(path)" in msg
    snap.assert_unchanged(new)  # no code columns left behind


def test_setting_adata_with_unseen_batch_names_no_load(saved_untrained, model_cells, snapshot):
    path, _ = saved_untrained
    model = ScGPT.load(path, adata=model_cells())  # then a setter: no load, no class known
    new = model_cells()
    new.obs["batch"] = np.repeat(["a", "c"], 50)
    snap = snapshot(new)
    with pytest.raises(ValueError, match="this model was not set up with: \\['c'\\]") as err:
        model.adata = new
    msg = str(err.value)
    assert "load" not in msg and "saved" not in msg and "ScGPT" not in msg
    assert "a set-up model cannot add categories" in msg and "keep the model's AnnData" in msg
    snap.assert_unchanged(new)


def test_load_onto_missing_labels_codes_them_unlabelled(saved_untrained, model_cells):
    path, _ = saved_untrained
    new = model_cells()
    labels = np.tile(["T", None, "NK", "B"], 25).astype(object)
    new.obs["cell_type"] = labels
    loaded = ScGPT.load(path, adata=new)
    expected = [{"B": 0, "NK": 1, "T": 2}.get(v, -1) for v in labels]  # sorted categories
    np.testing.assert_array_equal(new.obs["_scvi_labels"].to_numpy(), expected)
    assert loaded.adata is new


def test_load_onto_adata_without_the_registered_column(saved_untrained, model_cells, snapshot):
    path, _ = saved_untrained
    new = model_cells()
    del new.obs["cell_type"]
    snap = snapshot(new)
    with pytest.raises(KeyError, match=r"no column 'cell_type'.*labels_key.*ScGPT.load\(path\)"):
        ScGPT.load(path, adata=new)
    snap.assert_unchanged(new)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": 0}, "lr=0 must be a number > 0"), ({"weight_decay": -1.0}, "weight_decay=-1.0")],
)
def test_bad_optimiser_arguments_are_named_before_training(adata, kwargs, match):
    ScGPT.setup_anndata(adata, layer="counts")
    model = ScGPT(adata, **TINY)
    with pytest.raises(ValueError, match=match):
        model.train(max_steps=1, accelerator="cpu", enable_progress_bar=False, **kwargs)
    assert not model.is_trained_


def test_load_pretrained_our_folder(trained, adata, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    ScGPT.setup_anndata(adata)
    again = ScGPT.load_pretrained(tmp_path / "m", adata)
    assert not again.is_trained  # a fresh run starts from the weights
    np.testing.assert_array_equal(
        again.get_latent_representation(progress=False),
        model.get_latent_representation(progress=False),
    )


def test_max_len_validation(adata):
    ScGPT.setup_anndata(adata)
    with pytest.raises(ValueError, match="max_len"):
        ScGPT(adata, **TINY, max_len=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # one bin: every expressed value fell into bin 0, the bin of zeros
        ({"n_bins": 1}, r"n_bins=1 must be an integer >= 2"),
        ({"d_model": 0}, r"d_model=0 must be an integer >= 1"),  # was a ZeroDivisionError
        ({"d_model": 32.0}, r"d_model=32\.0 must be an integer"),  # was a TypeError in torch
        ({"d_hid": 0}, r"d_hid=0 must be an integer >= 1"),
    ],
)
def test_bad_sizes_are_named(adata, kwargs, match):
    ScGPT.setup_anndata(adata)
    with pytest.raises(ValueError, match=match):
        ScGPT(adata, **{**TINY, **kwargs})


def test_reassigning_adata_rematches_genes(adata, counts):
    ScGPT.setup_anndata(adata, layer="counts")
    model = ScGPT(adata, **TINY)
    other = ad.AnnData(counts[:, :20].copy(), var=pd.DataFrame(index=GENES[:20][::-1]))
    other.layers["counts"] = other.X.copy()
    model.adata = other
    np.testing.assert_array_equal(model._gene_ids_for(other), np.arange(20)[::-1])
    model.view_anndata_setup()
    assert model.get_latent_representation(progress=False).shape == (100, 32)


def test_genes_changed_in_place_are_matched_again(adata):
    ScGPT.setup_anndata(adata, layer="counts")
    model = ScGPT(adata, **TINY)
    adata.var_names = list(adata.var_names[::-1])  # the same matrix, its genes renamed
    expected = model.get_latent_representation(adata.copy(), progress=False)  # matched anew
    np.testing.assert_array_equal(model.get_latent_representation(progress=False), expected)
    keep = np.arange(adata.n_vars) % 3 > 0  # as sc.pp.filter_genes does: in place
    adata._inplace_subset_var(keep)
    expected = model.get_latent_representation(adata.copy(), progress=False)
    np.testing.assert_array_equal(model.get_latent_representation(progress=False), expected)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)  # not IndexError


@pytest.mark.parametrize("dtype", ["category", "string"])
def test_missing_symbols_in_gene_key_do_not_break_the_matching_cache(adata, dtype, monkeypatch):
    from omicformer.scgpt.model import _scgpt

    symbols = pd.Series(adata.var_names, index=adata.var_names, dtype=dtype)
    symbols.iloc[0] = None  # NaN (as an h5ad reads one back) or pd.NA: a gene without a symbol
    adata.var["symbol"] = symbols
    ScGPT.setup_anndata(adata, layer="counts", gene_key="symbol")
    model = ScGPT(adata, **TINY)
    calls = []
    monkeypatch.setattr(_scgpt, "match_genes", lambda *a, **k: calls.append(1))
    for _ in range(2):  # the same genes: matched once, when the model was made
        model.get_latent_representation(progress=False)
    assert calls == []


def test_genes_without_a_symbol_are_named_by_var_names_not_one_shared_token(adata):
    # a vocabulary built from the data gave every gene with a NaN symbol the token "nan" and
    # every blank one the token "": different genes read as one, in training and in queries
    symbols = pd.Series(adata.var_names, index=adata.var_names, dtype=object)
    adata.var_names = [f"ENSG{i}" for i in range(adata.n_vars)]
    symbols.index = adata.var_names
    symbols.iloc[[0, 1]] = np.nan
    symbols.iloc[[2, 3]] = ["", "  "]
    adata.var["symbol"] = symbols
    ScGPT.setup_anndata(adata, layer="counts", gene_key="symbol")
    model = ScGPT(adata, **TINY)
    tokens = model.vocab.genes()
    assert "nan" not in tokens and "" not in tokens and "  " not in tokens
    ids = model.gene_ids_
    assert [ids[i] for i in range(4)] == [model.vocab[f"ENSG{i}"] for i in range(4)]
    assert len(set(ids.tolist())) == adata.n_vars  # one token per gene
    query = adata.copy()  # other genes without a symbol: matched to no gene of the model
    query.var["symbol"] = list(GENES[: adata.n_vars])
    query.var.iloc[[10, 11], query.var.columns.get_loc("symbol")] = [np.nan, ""]
    q_ids = model._gene_ids_for(query)
    assert q_ids[10] == q_ids[11] == -1
    assert q_ids[12] == model.vocab[GENES[12]]


def test_save_anndata_needs_adata(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    bare = ScGPT.load(tmp_path / "m")
    with pytest.raises(ValueError, match="no AnnData"):
        bare.save(tmp_path / "m2", save_anndata=True)


def test_a_path_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch, model_cells):
    # save("~/m") wrote a folder literally named "~" in the working directory
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    a = model_cells()
    ScGPT.setup_anndata(a, layer="counts")
    model = ScGPT(a, **TINY)
    model.save("~/m")
    assert (tmp_path / "home" / "m" / "model.safetensors").is_file()
    assert not (tmp_path / "~").exists()
    loaded = ScGPT.load("~/m", adata=a)
    np.testing.assert_array_equal(loaded.get_latent_representation(progress=False),
                                  model.get_latent_representation(progress=False))  # fmt: skip


def test_a_save_that_fails_part_way_keeps_the_model_saved_before(
    trained, model_cells, tmp_path, weights_write_fails
):
    # the files were written in place: a full disk while replacing a saved model left
    # 16 bytes of weights, and the old model was lost
    import errno

    model, a = trained
    model.save(tmp_path / "m", save_anndata=True)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    other = model_cells()[:30].copy()
    ScGPT.setup_anndata(other, layer="counts")
    weights_write_fails("model.safetensors", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        ScGPT(other, **TINY).save(tmp_path / "m", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    np.testing.assert_array_equal(
        ScGPT.load(tmp_path / "m").get_latent_representation(a, progress=False),
        model.get_latent_representation(progress=False),
    )
    with pytest.raises(OSError, match="No space left"):  # a first save leaves no folder
        model.save(tmp_path / "new" / "m")
    assert not (tmp_path / "new").exists()


def test_a_backed_anndata_saved_with_the_model_is_backed_by_the_saved_file(
    trained, tmp_path, weights_write_fails
):
    # anndata points a backed AnnData at the file it wrote: the staged copy, deleted after
    # the move, so the AnnData could not be read again
    import errno

    model, a = trained
    a.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    z = model.get_latent_representation(backed, progress=False)
    ScGPT.setup_anndata(backed, layer="counts", batch_key="batch", labels_key="cell_type")
    model.save(tmp_path / "m")
    alias = ScGPT.load(tmp_path / "m", adata=backed)
    alias.save(tmp_path / "m2", save_anndata=True)
    assert backed.filename == tmp_path / "m2" / "adata.h5ad"  # as anndata's own write does
    backed.file.close()
    np.testing.assert_array_equal(model.get_latent_representation(backed, progress=False), z)
    weights_write_fails("model.safetensors", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        alias.save(tmp_path / "m3", save_anndata=True)
    assert backed.filename == tmp_path / "m2" / "adata.h5ad"  # a failed save: as it was


def test_a_folder_of_another_kind_of_model_is_replaced_whole(trained, official_ckpt, tmp_path):
    # an official scGPT folder lost its vocab.json without overwrite=True; a DNABERT folder
    # saved over kept its config.json and vocab.txt (DNABert.load then failed on the mix)
    import shutil

    from omicformer.dnabert.model import DNABert

    model, _ = trained
    official, _, _ = official_ckpt
    shutil.copytree(official, tmp_path / "scGPT_human")
    before = {p.name: p.read_bytes() for p in (tmp_path / "scGPT_human").iterdir()}
    with pytest.raises(FileExistsError, match="already holds a saved model; pass overwrite"):
        model.save(tmp_path / "scGPT_human")
    assert {p.name: p.read_bytes() for p in (tmp_path / "scGPT_human").iterdir()} == before
    model.save(tmp_path / "scGPT_human", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "scGPT_human").iterdir()) == [
        "model.safetensors", "omicformer_config.json", "vocab.json"]  # fmt: skip

    dna = DNABert(k=3, d_model=32, n_layers=1, n_heads=2, max_len=64)
    dna.save(tmp_path / "f")
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a saved model"):
        model.save(tmp_path / "f")
    model.save(tmp_path / "f", overwrite=True, save_anndata=True)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "adata.h5ad",
        "model.safetensors",
        "notes.txt",
        "omicformer_config.json",
        "vocab.json",
    ]
    with pytest.raises(FileExistsError, match=r"already holds a model \(model.safetensors"):
        dna.save(tmp_path / "f")
    dna.save(tmp_path / "f", overwrite=True)  # the scGPT vocabulary and AnnData go
    assert "vocab.json" not in {p.name for p in (tmp_path / "f").iterdir()}
    assert "adata.h5ad" not in {p.name for p in (tmp_path / "f").iterdir()}
    assert DNABert.load(tmp_path / "f").k == 3
