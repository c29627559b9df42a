"""ScGPT user class: setup, construction, embeddings, save/load round trips, pretrained loading."""

from __future__ import annotations

import json
import re

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


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    lam = rng.gamma(1.0, 1.0, size=(1, 50))
    return sp.csr_matrix(rng.poisson(lam, size=(100, 50)).astype(np.float32) + np.eye(100, 50))


def _adata(counts) -> ad.AnnData:
    obs = pd.DataFrame(
        {"batch": np.repeat(["a", "b"], 50), "cell_type": np.tile(["T", "B", "NK", "T"], 25)},
        index=[f"c{i}" for i in range(100)],
    )
    a = ad.AnnData(counts.copy(), obs=obs, var=pd.DataFrame(index=GENES))
    a.layers["counts"] = a.X.copy()
    a.var["symbol"] = GENES
    return a


@pytest.fixture
def adata(counts) -> ad.AnnData:
    return _adata(counts)


@pytest.fixture(scope="module")
def trained(counts) -> tuple[ScGPT, ad.AnnData]:
    a = _adata(counts)
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


def test_overwriting_a_saved_model_does_not_keep_its_anndata(trained, counts, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m", save_anndata=True)  # 100 cells
    other = _adata(counts)[:30].copy()
    ScGPT.setup_anndata(other, layer="counts")
    ScGPT(other, **TINY).save(tmp_path / "m", overwrite=True)  # without its AnnData
    assert ScGPT.load(tmp_path / "m").adata is None  # not the replaced model's 100 cells
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "adata.h5ad").write_text("a user's file")  # not a saved model
    model.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "adata.h5ad").read_text() == "a user's file"


def test_load_keeps_batch_categories(trained, tmp_path):
    model, a = trained
    model.save(tmp_path / "m")
    new = _adata(a.layers["counts"])[::-1].copy()  # batch "b" now comes first
    loaded = ScGPT.load(tmp_path / "m", adata=new)
    mapping = loaded.registry["field_registries"]["batch"]["state_registry"]["categorical_mapping"]
    assert list(mapping) == ["a", "b"]
    assert new.obs["_scvi_batch"].iloc[0] == 1


@pytest.fixture(scope="module")
def saved_untrained(counts, tmp_path_factory):
    """An untrained tiny ScGPT set up with batch and labels, saved: (folder, AnnData)."""
    a = _adata(counts)
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
    saved_untrained, counts, snapshot, column, values, unseen, known
):
    path, _ = saved_untrained
    new = _adata(counts)
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


def test_load_onto_missing_labels_codes_them_unlabelled(saved_untrained, counts):
    path, _ = saved_untrained
    new = _adata(counts)
    labels = np.tile(["T", None, "NK", "B"], 25).astype(object)
    new.obs["cell_type"] = labels
    loaded = ScGPT.load(path, adata=new)
    expected = [{"B": 0, "NK": 1, "T": 2}.get(v, -1) for v in labels]  # sorted categories
    np.testing.assert_array_equal(new.obs["_scvi_labels"].to_numpy(), expected)
    assert loaded.adata is new


def test_load_onto_adata_without_the_registered_column(saved_untrained, counts, snapshot):
    path, _ = saved_untrained
    new = _adata(counts)
    del new.obs["cell_type"]
    snap = snapshot(new)
    with pytest.raises(KeyError, match=r"no column 'cell_type'.*labels_key.*ScGPT.load\(path\)"):
        ScGPT.load(path, adata=new)
    snap.assert_unchanged(new)


def test_a_model_just_trained_is_a_starting_point_for_a_task_model(adata, counts):
    from omicformer.scgpt.model import ScGPTClassifier, ScGPTIntegration

    ScGPTIntegration.setup_anndata(adata, layer="counts", batch_key="batch")
    model = ScGPTIntegration(adata, **TINY)
    # no validation pass after the last step: the module kept that step's gene embeddings
    # with their autograd graph (official cur_gene_token_embs), which copy.deepcopy refuses
    model.train(max_steps=1, batch_size=32, validation_size=0.0, accelerator="cpu", devices=1,
                enable_progress_bar=False)  # fmt: skip
    target = _adata(counts)  # batches as the model's: its DSBN layers are for "a" and "b"
    ScGPTClassifier.setup_anndata(target, layer="counts", batch_key="batch", labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(model, target)
    theirs = model.module.state_dict()
    encoder = [k for k in theirs if k.startswith(("encoder.", "transformer_encoder."))]
    assert encoder
    for key in encoder:
        torch.testing.assert_close(clf.module.state_dict()[key], theirs[key], rtol=0, atol=0)
    assert clf.module is not model.module


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


def test_load_rejects_other_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved ScGPT"):
        load_module(tmp_path / "empty")


def _write_official(official, path, max_seq_len=600):
    """A small official-format checkpoint written from the independent reference model.

    ``official.write_checkpoint`` (tests/scgpt/conftest.py) saves a ``RefTransformerModel`` (torch
    layers, never ``omicformer.scgpt.module``) under flash-attn ``self_attn.Wqkv`` names, without a
    ``flag_encoder``. Returns the reference model and the full vocab (specials appended).
    """
    ref, vocab = official.write_checkpoint(path, flash_keys="Wqkv", extra=False)
    args = json.loads((path / "args.json").read_text())
    args["max_seq_len"] = max_seq_len
    (path / "args.json").write_text(json.dumps(args))
    return ref, vocab


def test_load_pretrained_official_folder(official, continuous_adata_factory, tmp_path):
    ref, vocab = _write_official(official, tmp_path / "scGPT_tiny")
    adata = continuous_adata_factory(30, seed=3)  # continuous values: no binning ties
    ScGPT.setup_anndata(adata)
    model = ScGPT.load_pretrained(tmp_path / "scGPT_tiny", adata)
    assert model.max_len == 600
    assert "flag_encoder.weight" in model.pretrained_report_["missing"]
    ours = model.module.state_dict()
    for k, v in ref.state_dict().items():  # torch names == official names after Wqkv -> in_proj_
        if k.startswith(("encoder.", "value_encoder.", "transformer_encoder.")):
            assert torch.equal(ours[k], v), k
    z = model.get_latent_representation(device="cpu", progress=False)  # float32, as the reference
    # the reference forward of official ``embed_data``: genes outside the vocab dropped first
    X = adata.X.toarray()[:, :50]
    expected = official.embed(ref, X, np.arange(50), vocab, max_len=600, pad_to_max=False)
    assert z.shape == (30, 32)
    np.testing.assert_allclose(z, expected, atol=1e-4, rtol=0)
    model.train(max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False, lr=1e-4)
    assert model.is_trained


def test_symbols_matched_ignoring_case_are_said_once(official_ckpt, continuous_adata_factory):
    # "g0" matches the vocabulary's "G0" only ignoring case (as mouse "Cd3e" matches "CD3E")
    from omicformer.scgpt import tl

    path = official_ckpt[0]
    adata = continuous_adata_factory(40, seed=4)
    adata.var_names = [g.lower() for g in adata.var_names]
    ScGPT.setup_anndata(adata)
    with pytest.warns(UserWarning, match=r"adata\.var_names .*mostly when case is ignored") as rec:
        model = ScGPT.load_pretrained(path, adata)
    assert [r.filename for r in rec] == [__file__]  # the user's line, not the package's
    assert (model.gene_ids_ >= 0).sum() == 50
    adata.obs["batch"] = np.repeat(["a", "b"], 20)
    with pytest.warns(UserWarning, match="mostly when case is ignored") as rec:
        tl.integrate(adata, batch_key="batch", model=path, max_epochs=1, batch_size=8,
                     device="cpu", progress=False)  # fmt: skip
    said = [r for r in rec if "mostly when case is ignored" in str(r.message)]
    assert [r.filename for r in said] == [__file__]  # by tl.integrate, not again by its model


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


@pytest.fixture
def dsbn_folder(counts, tmp_path):
    """A saved DSBN model whose batches "a" (cells 0-49) and "b" have distinct statistics."""
    a = _adata(counts)
    ScGPT.setup_anndata(a, layer="counts", batch_key="batch")
    model = ScGPT(a, **TINY, dsbn=True)
    with torch.no_grad():
        for i, bn in enumerate(model.module.dsbn.bns):
            bn.running_mean.fill_(0.5 * i + 0.3)
            bn.running_var.fill_(2.0 + i)
    model.save(tmp_path / "dsbn")
    return tmp_path / "dsbn", model


def _batch_b_only(counts, categories=None):
    b = _adata(counts)[50:].copy()
    b.obs["batch"] = pd.Categorical(b.obs["batch"], categories=categories)
    return b


def test_load_pretrained_keeps_each_batch_on_its_own_dsbn_layers(dsbn_folder, counts):
    path, source = dsbn_folder
    # cells 50-99 are batch "b": the source model embeds them with b's statistics
    expected = source.get_latent_representation(progress=False)[50:]
    b = _batch_b_only(counts)  # registered alone, "b" would get code 0: batch "a"'s layers
    ScGPT.setup_anndata(b, layer="counts", batch_key="batch")
    for start in (path, source):
        with pytest.raises(
            ValueError, match=r"batches \['a', 'b'\].*registered with the batches \['b'\]"
        ):
            ScGPT.load_pretrained(start, b)
    assert list(b.obs["batch"].cat.categories) == ["b"]  # untouched
    b = _batch_b_only(counts, categories=["a", "b"])  # the fix the message names
    ScGPT.setup_anndata(b, layer="counts", batch_key="batch")
    for start in (path, source):
        z = ScGPT.load_pretrained(start, b).get_latent_representation(progress=False)
        np.testing.assert_allclose(z, expected, atol=1e-6, rtol=0)


def test_load_pretrained_with_batch_layers_needs_a_batch_key(dsbn_folder, counts):
    path, _ = dsbn_folder
    b = _batch_b_only(counts)
    ScGPT.setup_anndata(b, layer="counts")
    with pytest.raises(ValueError, match=r"batch-dependent layers.*batch_key"):
        ScGPT.load_pretrained(path, b)


def test_load_pretrained_missing_file(adata, official, tmp_path):
    _write_official(official, tmp_path / "ck")
    (tmp_path / "ck" / "args.json").unlink()
    ScGPT.setup_anndata(adata)
    with pytest.raises(FileNotFoundError, match=r"args\.json"):
        ScGPT.load_pretrained(tmp_path / "ck", adata)


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


def test_save_anndata_needs_adata(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    bare = ScGPT.load(tmp_path / "m")
    with pytest.raises(ValueError, match="no AnnData"):
        bare.save(tmp_path / "m2", save_anndata=True)


# ---------------------------------------------------------------- damaged settings in folders
BAD_LENGTHS = ["abc", 3.7, -5, 1, None, True]


@pytest.mark.parametrize("value", BAD_LENGTHS)
def test_load_pretrained_refuses_a_bad_official_max_seq_len(adata, official, tmp_path, value):
    # int() read "abc" as an error of its own, 3.7 as 3 and true as 1, -5 and 1 as lengths
    _write_official(official, tmp_path / "ck", max_seq_len=value)
    ScGPT.setup_anndata(adata)
    match = (
        rf"^args\.json of .*ck: 'max_seq_len' must be an integer >= 2, got {re.escape(repr(value))}"
    )
    with pytest.raises(ValueError, match=match):
        ScGPT.load_pretrained(tmp_path / "ck", adata)


def test_official_max_seq_len_may_be_written_as_text(adata, official, tmp_path):
    _write_official(official, tmp_path / "ck", max_seq_len="300")
    ScGPT.setup_anndata(adata)
    assert ScGPT.load_pretrained(tmp_path / "ck", adata).max_len == 300


def _saved_tiny(adata, path):
    """A tiny untrained ScGPT saved to ``path``; returns its config file's contents."""
    ScGPT.setup_anndata(adata)
    ScGPT(adata, d_model=16, n_layers=1, n_heads=2, max_len=64).save(path)
    return json.loads((path / "omicformer_config.json").read_text())


def _rewrite(path, config):
    (path / "omicformer_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("value", BAD_LENGTHS)
def test_saved_folder_with_a_bad_max_len_is_named_by_every_loader(adata, tmp_path, value):
    from omicformer.scgpt import tl

    path = tmp_path / "m"
    config = _saved_tiny(adata, path)
    config["model_settings"]["max_len"] = value
    _rewrite(path, config)
    match = (
        rf"omicformer_config\.json: 'model_settings\.max_len' must be an integer >= 2, "
        rf"got {re.escape(repr(value))}"
    )
    snap = adata.copy()
    for load in (lambda: ScGPT.load(path, adata), lambda: ScGPT.load_pretrained(path, adata),
                 lambda: tl.embed(adata, model=str(path), device="cpu", progress=False)):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            load()
    assert "X_scgpt" not in adata.obsm and "scgpt" not in adata.uns
    assert sorted(adata.obs.columns) == sorted(snap.obs.columns)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("d_model", "abc", r"'module_config\.d_model' must be an integer >= 1, got 'abc'"),
        ("nlayers", 1.5, r"'module_config\.nlayers' must be an integer >= 1, got 1\.5"),
        ("nhead", None, r"'module_config\.nhead' must be an integer >= 1, got None"),
        ("pre_norm", "false", r"'module_config\.pre_norm' must be true or false, got 'false'"),
        ("ntoken", None, r"'module_config\.ntoken' must be an integer >= 1, got None"),
    ],
)
def test_saved_folder_with_a_bad_module_config_field_is_named(adata, tmp_path, field, value, match):
    path = tmp_path / "m"
    config = _saved_tiny(adata, path)
    config["module_config"][field] = value
    _rewrite(path, config)
    with pytest.raises(ValueError, match=r"omicformer_config\.json: " + match):
        load_module(path)


def test_saved_folder_whose_weights_do_not_fit_its_config_is_named(adata, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    _saved_tiny(adata, path)
    state = load_file(str(path / "model.safetensors"))
    state["encoder.embedding.weight"] = state["encoder.embedding.weight"][:, :8].contiguous()
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"encoder\.embedding\.weight: file \(53, 8\) vs config \(53, 16\)"
    ):
        load_module(path)
