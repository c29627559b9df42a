"""ScGPT.load_pretrained (official folders, batch layers, another model) and damaged folders."""

from __future__ import annotations

import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from omicformer.scgpt.model import ScGPT, load_module

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4}
GENES = [f"G{i}" for i in range(50)]


@pytest.fixture
def adata(model_cells) -> ad.AnnData:
    return model_cells()


def test_a_model_just_trained_is_a_starting_point_for_a_task_model(adata, model_cells):
    from omicformer.scgpt.model import ScGPTClassifier, ScGPTIntegration

    ScGPTIntegration.setup_anndata(adata, layer="counts", batch_key="batch")
    model = ScGPTIntegration(adata, **TINY)
    # no validation pass after the last step: the module kept that step's gene embeddings
    # with their autograd graph (official cur_gene_token_embs), which copy.deepcopy refuses
    model.train(max_steps=1, batch_size=32, validation_size=0.0, accelerator="cpu", devices=1,
                enable_progress_bar=False)  # fmt: skip
    target = model_cells()  # batches as the model's: its DSBN layers are for "a" and "b"
    ScGPTClassifier.setup_anndata(target, layer="counts", batch_key="batch", labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(model, target)
    theirs = model.module.state_dict()
    encoder = [k for k in theirs if k.startswith(("encoder.", "transformer_encoder."))]
    assert encoder
    for key in encoder:
        torch.testing.assert_close(clf.module.state_dict()[key], theirs[key], rtol=0, atol=0)
    assert clf.module is not model.module


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


def _write_official_dsbn(official, path):
    """An official folder whose best_model.pt holds DSBN for two (unnamed) batches, as the
    official integration recipe saves it (``dsbn.bns.<i>.running_mean/var``, affine=False)."""
    ref, vocab = _write_official(official, path)
    state = torch.load(path / "best_model.pt", weights_only=True)
    gen = torch.Generator().manual_seed(1)
    stats = [(torch.randn(32, generator=gen) + i, torch.rand(32, generator=gen) + 0.5 + i)
             for i in range(2)]  # fmt: skip
    for i, (mean, var) in enumerate(stats):
        state[f"dsbn.bns.{i}.running_mean"] = mean
        state[f"dsbn.bns.{i}.running_var"] = var
        state[f"dsbn.bns.{i}.num_batches_tracked"] = torch.tensor(7)
    torch.save(state, path / "best_model.pt")
    return ref, vocab, stats


def test_load_pretrained_official_folder_keeps_its_dsbn(
    official, continuous_adata_factory, tmp_path
):
    path = tmp_path / "scGPT_dsbn"
    ref, vocab, stats = _write_official_dsbn(official, path)
    adata = continuous_adata_factory(20, seed=3)
    adata.obs["batch"] = ["a", "b"] * 10
    ScGPT.setup_anndata(adata, batch_key="batch")
    model = ScGPT.load_pretrained(path, adata)
    assert not [k for k in model.pretrained_report_["skipped"] if k.startswith("dsbn.")]
    # one cell of batch 1, by hand: official _encode normalises the summed token embeddings
    # with that batch's running statistics (eval mode) before the transformer
    src = torch.tensor([[vocab["<cls>"], vocab["G0"], vocab["G1"], vocab["G2"]]])
    values = torch.tensor([[-2.0, 3.0, 10.0, 50.0]])
    mask = torch.zeros_like(src, dtype=torch.bool)
    mean, var = stats[1]
    with torch.no_grad():
        total = ref.encoder(src) + ref.value_encoder(values)
        expected = ref.transformer_encoder((total - mean) / torch.sqrt(var + 6.1e-5),
                                           src_key_padding_mask=mask)  # fmt: skip
        got = model.module.eval()._encode(src, values, mask, batch_labels=torch.tensor([1]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_official_dsbn_of_unnamed_batches_is_not_given_to_other_batches(
    official, continuous_adata_factory, tmp_path
):
    from omicformer.scgpt.model import ScGPTIntegration

    path = tmp_path / "scGPT_dsbn"
    _write_official_dsbn(official, path)
    adata = continuous_adata_factory(30, seed=3)
    adata.obs["batch"] = ["a", "b", "c"] * 10
    # more batches than the checkpoint has layers for: refused at loading, not when embedding
    ScGPT.setup_anndata(adata, batch_key="batch")
    with pytest.raises(ValueError, match=r"layers for 2 batches.*holds 3.*drop_batch_layers=True"):
        ScGPT.load_pretrained(path, adata)
    model = ScGPT.load_pretrained(path, adata, drop_batch_layers=True)
    assert not model.module.config.domain_spec_batchnorm
    # an integration model sizes its own layers for adata's batches: the checkpoint's, of
    # batches it cannot name, are left out (and reported), not given to a, b by position
    for dsbn in (True, False):
        ScGPTIntegration.setup_anndata(adata, batch_key="batch")
        integration = ScGPTIntegration.load_pretrained(path, adata, dsbn=dsbn)
        report = integration.pretrained_report_
        assert "dsbn.bns.1.running_mean" in report["skipped"]
        if dsbn:
            assert "dsbn.bns.1.running_mean" in report["missing"]
            for bn in integration.module.dsbn.bns:  # fresh statistics
                assert torch.equal(bn.running_mean, torch.zeros(32))
        else:
            assert not hasattr(integration.module, "dsbn")


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


@pytest.fixture
def dsbn_folder(model_cells, tmp_path):
    """A saved DSBN model whose batches "a" (cells 0-49) and "b" have distinct statistics."""
    a = model_cells()
    ScGPT.setup_anndata(a, layer="counts", batch_key="batch")
    model = ScGPT(a, **TINY, dsbn=True)
    with torch.no_grad():
        for i, bn in enumerate(model.module.dsbn.bns):
            bn.running_mean.fill_(0.5 * i + 0.3)
            bn.running_var.fill_(2.0 + i)
    model.save(tmp_path / "dsbn")
    return tmp_path / "dsbn", model


def _batch_b_only(model_cells, categories=None):
    b = model_cells()[50:].copy()
    b.obs["batch"] = pd.Categorical(b.obs["batch"], categories=categories)
    return b


def test_load_pretrained_keeps_each_batch_on_its_own_dsbn_layers(dsbn_folder, model_cells):
    path, source = dsbn_folder
    # cells 50-99 are batch "b": the source model embeds them with b's statistics
    expected = source.get_latent_representation(progress=False)[50:]
    b = _batch_b_only(model_cells)  # registered alone, "b" would get code 0: batch "a"'s layers
    ScGPT.setup_anndata(b, layer="counts", batch_key="batch")
    for start in (path, source):
        with pytest.raises(
            ValueError, match=r"batches \['a', 'b'\].*registered with the batches \['b'\]"
        ):
            ScGPT.load_pretrained(start, b)
    assert list(b.obs["batch"].cat.categories) == ["b"]  # untouched
    b = _batch_b_only(model_cells, categories=["a", "b"])  # the fix the message names
    ScGPT.setup_anndata(b, layer="counts", batch_key="batch")
    for start in (path, source):
        z = ScGPT.load_pretrained(start, b).get_latent_representation(progress=False)
        np.testing.assert_allclose(z, expected, atol=1e-6, rtol=0)


def test_load_pretrained_with_batch_layers_needs_a_batch_key(dsbn_folder, model_cells):
    path, _ = dsbn_folder
    b = _batch_b_only(model_cells)
    ScGPT.setup_anndata(b, layer="counts")
    with pytest.raises(ValueError, match=r"batch-dependent layers.*batch_key"):
        ScGPT.load_pretrained(path, b)


def test_load_pretrained_missing_file(adata, official, tmp_path):
    _write_official(official, tmp_path / "ck")
    (tmp_path / "ck" / "args.json").unlink()
    ScGPT.setup_anndata(adata)
    with pytest.raises(FileNotFoundError, match=r"args\.json"):
        ScGPT.load_pretrained(tmp_path / "ck", adata)


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
