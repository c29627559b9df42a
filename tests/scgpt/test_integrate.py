"""scgpt.tl.integrate, ScGPTIntegration and the integration objective on small synthetic batches."""

import inspect
import warnings

import numpy as np
import pytest
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTIntegration
from omicformer.scgpt.module import masked_mse_loss, mnn_loss
from omicformer.scgpt.train import IntegrationTrainingPlan, MaskedValueCollator

N_GENES = 60
QUICK = {"max_epochs": 2, "batch_size": 16, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def integrated(two_batch_pretrained, two_batches):
    adata = two_batches()
    before = adata.copy()
    model = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, return_model=True,
                         dsbn=True, **QUICK)  # fmt: skip
    return adata, before, model


# ------------------------------------------------------------------------------ the one-liner
def test_integrate_writes_embedding_and_uns(integrated):
    adata, before, _ = integrated
    z = adata.obsm["X_scgpt_integrated"]
    assert z.shape == (adata.n_obs, 32) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    info = adata.uns["scgpt"]["X_scgpt_integrated"]
    assert info["batches"] == ["a", "b"]
    assert info["n_genes_matched"] == info["n_genes_total"] == N_GENES
    assert info["params"]["retrained"] is True and info["params"]["dab_weight"] == 1.0
    assert info["params"]["mnn_weight"] == 30.0
    assert {"train_loss_mse", "train_loss_gepc", "train_loss_ecs", "train_loss_dab",
            "validation_loss"} <= set(info["losses"])  # fmt: skip
    # the caller's AnnData only gained the results (scvi-tools set-up stays on a private copy)
    assert list(adata.obs.columns) == list(before.obs.columns)
    assert set(adata.uns) == {"scgpt"}
    assert (adata.X != before.X).nnz == 0


def test_returned_model_has_the_official_integration_parts(integrated):
    _, _, model = integrated
    c = model.module.config
    assert isinstance(model, ScGPTIntegration) and model.is_trained_
    assert c.do_dab and c.domain_spec_batchnorm and c.num_batch_labels == 2
    assert c.ecs_threshold == 0.8 and c.use_batch_labels
    assert model.module.grad_reverse_discriminator.reverse_grad
    assert len(model.module.dsbn.bns) == 2
    assert "grad_reverse_discriminator._decoder.0.weight" in model.pretrained_report_["missing"]


def test_same_seed_same_embedding(two_batch_pretrained, two_batches):
    a, b = two_batches(), two_batches()
    tl.integrate(
        a,
        batch_key="batch",
        model=two_batch_pretrained,
        max_epochs=1,
        batch_size=16,
        progress=False,
    )
    tl.integrate(
        b,
        batch_key="batch",
        model=two_batch_pretrained,
        max_epochs=1,
        batch_size=16,
        progress=False,
    )
    np.testing.assert_array_equal(a.obsm["X_scgpt_integrated"], b.obsm["X_scgpt_integrated"])


def test_copy_returns_new_adata_and_leaves_input(two_batch_pretrained, two_batches):
    adata = two_batches()
    out = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, copy=True,
                       key_added="Z", max_epochs=1, batch_size=16, progress=False)  # fmt: skip
    assert "Z" in out.obsm and "Z" not in adata.obsm and "scgpt" not in adata.uns


def test_scaled_x_is_integrated_from_raw(two_batch_pretrained, two_batches):
    import scanpy as sc

    a = two_batches()
    sc.pp.log1p(a)
    expected = tl.integrate(a, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                            batch_size=16, progress=False, copy=True)  # fmt: skip
    expected = expected.obsm["X_scgpt_integrated"]
    a.raw = a
    a.X = a.X.toarray()
    sc.pp.scale(a)
    with pytest.warns(UserWarning, match=r"adata.X holds negative values.*adata.raw") as record:
        tl.integrate(a, batch_key="batch", model=two_batch_pretrained, max_epochs=1, batch_size=16,
                     progress=False)  # fmt: skip
    scaled = [w for w in record if "negative values" in str(w.message)]
    assert scaled[0].filename == __file__  # the user's line, not the package's wrappers
    np.testing.assert_array_equal(a.obsm["X_scgpt_integrated"], expected)


def test_symbols_in_a_var_column_are_found(two_batch_pretrained, two_batches):
    kw = {"batch_key": "batch", "model": two_batch_pretrained, "max_epochs": 1, "batch_size": 16,
          "progress": False}  # fmt: skip
    a = two_batches()
    a.var["gene_name"] = a.var_names.to_numpy()
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    expected = tl.integrate(a, gene_key="gene_name", copy=True, **kw).obsm["X_scgpt_integrated"]
    with pytest.warns(UserWarning, match=r"var\['gene_name'\] are used \(60 of 60") as record:
        tl.integrate(a, **kw)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(a.obsm["X_scgpt_integrated"], expected)
    assert a.uns["scgpt"]["X_scgpt_integrated"]["params"]["gene_key"] == "gene_name"


def test_symbols_of_another_case_are_matched(two_batch_pretrained, two_batches):
    kw = {"batch_key": "batch", "model": two_batch_pretrained, "max_epochs": 1, "batch_size": 16,
          "progress": False}  # fmt: skip
    a = two_batches()
    expected = tl.integrate(a, copy=True, **kw).obsm["X_scgpt_integrated"]
    a.var_names = [g.lower() for g in a.var_names]
    with pytest.warns(UserWarning, match=r"mostly when case is ignored \(0 as written, 60 of 60"):
        tl.integrate(a, **kw)
    np.testing.assert_array_equal(a.obsm["X_scgpt_integrated"], expected)
    assert a.uns["scgpt"]["X_scgpt_integrated"]["case_ignored"] is True


def test_default_fine_tunes_without_dsbn(two_batch_pretrained, two_batches):
    # tl.integrate's tuned default (docs/scgpt.md, "dsbn=True or False?"); the model class keeps
    # the official DSBN=True
    model = tl.integrate(two_batches(), batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                         batch_size=16, progress=False, return_model=True)  # fmt: skip
    c = model.module.config
    assert not c.domain_spec_batchnorm and c.do_dab and c.use_batch_labels
    assert model.gene_selection == "highest"  # long cells keep their most expressed genes
    assert inspect.signature(ScGPTIntegration.load_pretrained).parameters["dsbn"].default is True
    official = two_batches()
    model = tl.integrate(official, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                         batch_size=16, gene_selection="random", progress=False,
                         return_model=True)  # fmt: skip
    assert model.gene_selection == "random"  # the official random subsets, on request
    params = official.uns["scgpt"]["X_scgpt_integrated"]["params"]
    assert params["gene_selection"] == "random"


def test_save_load_round_trip_gives_same_embedding(integrated, tmp_path, two_batches):
    adata, _, model = integrated
    model.save(tmp_path / "integ")
    loaded = ScGPTIntegration.load(tmp_path / "integ")
    assert loaded.batches_ == ["a", "b"] and loaded.is_trained_
    with pytest.raises(ValueError, match=r"This ScGPTIntegration has no AnnData; load it with"):
        loaded.train(max_epochs=1, accelerator="cpu")  # AttributeError: ... 'isbacked'
    assert loaded.gene_selection == model.gene_selection == "highest"
    # a trained ScGPTIntegration knowing the batches is used as is: no retraining
    again = tl.integrate(two_batches(), batch_key="batch", model=loaded, copy=True, progress=False)
    assert again.uns["scgpt"]["X_scgpt_integrated"]["params"]["retrained"] is False
    np.testing.assert_allclose(
        again.obsm["X_scgpt_integrated"], adata.obsm["X_scgpt_integrated"], atol=1e-5
    )
    # and tl.embed with the saved folder gives the same embedding before the MNN correction
    out = tl.embed(two_batches(), model=tmp_path / "integ", batch_key="batch", progress=False,
                   copy=True)  # fmt: skip
    assert out.uns["scgpt"]["X_scgpt"]["params"]["max_len"] == model.max_len == 256
    plain = tl.integrate(two_batches(), batch_key="batch", model=loaded, correction=None,
                         copy=True, progress=False)  # fmt: skip
    np.testing.assert_allclose(out.obsm["X_scgpt"], plain.obsm["X_scgpt_integrated"], atol=1e-5)


def test_a_trained_model_passed_in_records_its_settings_and_warns_of_ignored_ones(
    two_batch_pretrained, two_batches
):
    model = tl.integrate(two_batches(), batch_key="batch", model=two_batch_pretrained, dsbn=True,
                         mnn_weight=0.0, ecs_weight=3.0, return_model=True, copy=True,
                         **QUICK)[1]  # fmt: skip
    adata = two_batches()
    with pytest.warns(UserWarning, match=r"already trained.*labels_key='cell_type', "
                      r"max_epochs=5 only apply to fine-tuning and are ignored") as record:  # fmt: skip
        tl.integrate(adata, batch_key="batch", model=model, labels_key="cell_type", max_epochs=5,
                     progress=False)  # fmt: skip
    ignored = [w for w in record if "ignored" in str(w.message)]
    assert len(ignored) == 1 and ignored[0].filename == __file__
    params = adata.uns["scgpt"]["X_scgpt_integrated"]["params"]
    assert params["retrained"] is False
    # as the model was trained above, not the defaults of this call
    assert params["dsbn"] is True and params["mnn_weight"] == 0.0 and params["ecs_weight"] == 3.0
    assert params["max_epochs"] == QUICK["max_epochs"] and params["correction"] is None
    with warnings.catch_warnings(record=True) as record:  # nothing to ignore: no warning
        warnings.simplefilter("always")
        tl.integrate(two_batches(), batch_key="batch", model=model, progress=False)
    assert not [w for w in record if "ignored" in str(w.message)]


def test_labels_key_trains_a_cell_type_head(two_batch_pretrained, two_batches):
    adata = two_batches()
    adata.obs.loc[adata.obs_names[::3], "cell_type"] = np.nan  # a third unlabelled
    model = tl.integrate(adata, batch_key="batch", labels_key="cell_type",
                         model=two_batch_pretrained, return_model=True, **QUICK)  # fmt: skip
    assert model.module.cls_decoder.out_layer.out_features == 3
    assert "train_loss_cls" in model.history
    assert adata.uns["scgpt"]["X_scgpt_integrated"]["params"]["labels_key"] == "cell_type"


# ------------------------------------------------------------------------------ the objective
def test_model_class_trains_cells_with_a_missing_label_as_unlabelled(
    two_batch_pretrained, two_batches, monkeypatch
):
    # setup_anndata documents missing labels (NaN) as unlabelled: they must reach the cell-type
    # loss as -1, not as the last cell type
    seen = {}
    call = MaskedValueCollator.__call__

    def spy(self, items):
        batch = call(self, items)
        seen.update(zip(batch["cell_index"].tolist(), batch["labels"].tolist(), strict=True))
        return batch

    monkeypatch.setattr(MaskedValueCollator, "__call__", spy)
    adata = two_batches()
    types = adata.obs["cell_type"].to_numpy().copy()
    adata.obs["ct"] = adata.obs["cell_type"].astype(object)
    adata.obs.loc[adata.obs_names[::4], "ct"] = np.nan
    ScGPTIntegration.setup_anndata(adata, batch_key="batch", labels_key="ct")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata, dsbn=False)
    model.train(max_epochs=1, batch_size=16, validation_size=0.0, enable_progress_bar=False)
    assert sorted(seen) == list(range(adata.n_obs))
    classes = ["B", "Mono", "T"]  # the registered categories, sorted
    expected = [-1 if i % 4 == 0 else classes.index(types[i]) for i in range(adata.n_obs)]
    assert [seen[i] for i in range(adata.n_obs)] == expected


def test_early_stopping_without_held_out_cells_is_refused_as_scgpt_train_refuses_it(
    two_batch_pretrained, two_batches
):
    # it trained without early stopping, validation or a word ("As ScGPT.train", which refuses)
    adata = two_batches()
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata, dsbn=False)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=r"early_stopping=True needs validation data"):
        model.train(max_epochs=2, batch_size=16, validation_size=0.0, early_stopping=True,
                    enable_progress_bar=False)  # fmt: skip
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
    assert not model.is_trained_


def test_masked_value_collator_follows_random_mask_value(two_batches):
    ids = np.arange(10, 10 + N_GENES)
    coll = MaskedValueCollator(ids, cls_id=1, pad_id=0, n_bins=5, max_len=None, seed=3)
    a = two_batches(2)
    X = a.X.tocsr()
    items = [(i, X.indices[X.indptr[i]:X.indptr[i + 1]], X.data[X.indptr[i]:X.indptr[i + 1]], 0)
             for i in range(4)]  # fmt: skip
    batch = coll(items)
    for i in range(4):
        n_genes = int((~batch["padding_mask"][i]).sum()) - 1  # minus <cls>
        masked = batch["masked"][i]
        assert int(masked.sum()) == int(n_genes * 0.4)  # official: int(n * mask_ratio)
        assert not masked[0] and not masked[batch["padding_mask"][i]].any()
        assert torch.all(batch["values"][i][masked] == -1.0)
        keep = ~masked
        assert torch.equal(batch["values"][i][keep], batch["target"][i][keep])
        assert torch.all(batch["target"][i][masked] >= 1)  # non-zero genes: bins 1..n_bins
    again = coll(items)
    assert torch.equal(again["masked"], batch["masked"])  # seeded validation batches repeat


def test_plan_loss_is_the_official_sum(two_batch_pretrained, two_batches):
    a = two_batches(3)
    ScGPTIntegration.setup_anndata(a, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, a, dsbn=False,
                                             use_batch_labels=False)  # fmt: skip
    X, cols = model._training_matrix()
    coll = MaskedValueCollator(cols, cls_id=model.vocab.cls_id, pad_id=model.vocab.pad_id,
                               max_len=None, seed=0)  # fmt: skip
    codes = model._batch_codes(a)
    items = [(i, X.indices[X.indptr[i]:X.indptr[i + 1]], X.data[X.indptr[i]:X.indptr[i + 1]],
              int(codes[i])) for i in range(a.n_obs)]  # fmt: skip
    batch = coll(items)
    plan = IntegrationTrainingPlan(model.module, ecs_weight=10.0, dab_weight=1.0)
    module = model.module.eval()
    parts = plan.losses(batch)
    # the tutorial passes batch labels with DSBN, to decoders conditioned on them (neither here)
    out = module(batch["genes"], batch["values"], batch["padding_mask"],
                 batch_labels=None, MVC=True, ECS=True)  # fmt: skip
    m = batch["masked"]
    mse = ((out["mlm_output"] - batch["target"])[m] ** 2).mean()
    gepc = ((out["mvc_output"] - batch["target"])[m] ** 2).mean()
    e = torch.nn.functional.normalize(out["cell_emb"], dim=1)
    cos = (e @ e.T).fill_diagonal_(0).clamp(min=0)
    ecs = (1 - (cos - 0.8) ** 2).mean()
    dab = torch.nn.functional.cross_entropy(out["dab_output"], batch["batch_labels"])
    torch.testing.assert_close(parts["loss_mse"], mse)
    torch.testing.assert_close(parts["loss_gepc"], gepc)
    torch.testing.assert_close(parts["loss_ecs"], ecs)
    torch.testing.assert_close(parts["loss"], mse + gepc + 10 * ecs + dab)
    assert masked_mse_loss is not None
    # our cross-batch addition: + mnn_weight * mnn_loss of the same cell embeddings
    plan = IntegrationTrainingPlan(model.module, ecs_weight=10.0, dab_weight=1.0, mnn_weight=3.0)
    parts = plan.losses(batch)
    mnn = mnn_loss(out["cell_emb"], batch["batch_labels"])
    torch.testing.assert_close(parts["loss_mnn"], mnn)
    torch.testing.assert_close(parts["loss"], mse + gepc + 10 * ecs + dab + 3 * mnn)


def test_mixed_minibatch_dsbn_equals_per_batch_dsbn(two_batch_pretrained, two_batches):
    """A minibatch with two batches normalises each with its own statistics (as two calls)."""
    a = two_batches(3)
    ScGPTIntegration.setup_anndata(a, batch_key="batch")
    module = ScGPTIntegration.load_pretrained(two_batch_pretrained, a).module.train()
    x = torch.randn(6, 5, 32)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    mixed = module._domain_norm(x, labels)
    for d in (0, 1):
        rows = labels == d
        alone = module._domain_norm(x[rows], labels[rows])
        torch.testing.assert_close(mixed[rows], alone)


def test_training_runs_in_train_mode_so_dsbn_learns_its_statistics(integrated):
    """Pretrained modules load in eval mode; the engine must switch to train mode, or DSBN
    keeps its initial running statistics (mean 0, variance 1) and dropout stays off."""
    _, _, model = integrated
    for bn in model.module.dsbn.bns:
        assert bn.num_batches_tracked > 0
        assert bn.running_mean.abs().sum() > 0
    assert not model.module.training  # and back to eval mode for inference


def test_zero_genes_are_unexpressed_and_enter_gepc_with_target_zero(
    two_batch_pretrained, two_batches
):
    a = two_batches(3)
    ScGPTIntegration.setup_anndata(a, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(
        two_batch_pretrained, a, dsbn=False, use_batch_labels=True
    )
    X, cols = model._training_matrix()
    coll = MaskedValueCollator(cols, cls_id=model.vocab.cls_id, pad_id=model.vocab.pad_id,
                               max_len=None, n_zero_genes=8, seed=0)  # fmt: skip
    codes = model._batch_codes(a)
    items = [(i, X.indices[X.indptr[i]:X.indptr[i + 1]], X.data[X.indptr[i]:X.indptr[i + 1]],
              int(codes[i])) for i in range(a.n_obs)]  # fmt: skip
    batch = coll(items)
    pad = model.vocab.pad_id
    for i, (_, c, _, _) in enumerate(items):
        z = batch["zero_genes"][i]
        z = z[z != pad].numpy()
        assert len(z) == min(8, N_GENES - len(c)) and len(set(z)) == len(z)
        assert not np.isin(z, cols[c]).any() and np.isin(z, cols).all()
    plan = IntegrationTrainingPlan(model.module.eval(), ecs_weight=0.0, dab_weight=0.0)
    out = model.module(batch["genes"], batch["values"], batch["padding_mask"],
                       batch_labels=batch["batch_labels"], MVC=True)  # fmt: skip
    cell = torch.cat([out["cell_emb"], model.module.batch_encoder(batch["batch_labels"])], 1)
    zero_pred = model.module.mvc_decoder(cell, model.module.encoder(batch["zero_genes"]))["pred"]
    real, m = batch["zero_genes"] != pad, batch["masked"]
    errors = torch.cat([(out["mvc_output"] - batch["target"])[m], zero_pred[real]])
    torch.testing.assert_close(plan.losses(batch)["loss_gepc"], (errors**2).mean())


def test_model_from_scratch_trains_and_embeds(two_batches):
    adata = two_batches(4)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration(adata, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    c = model.module.config
    assert c.do_dab and c.domain_spec_batchnorm and c.num_batch_labels == 2
    assert c.ecs_threshold == 0.8  # Tutorial_Integration's, not TransformerModel's 0.3
    model.train(max_epochs=1, batch_size=8, accelerator="cpu", enable_progress_bar=False)
    z = model.get_latent_representation(progress=False)
    assert z.shape == (adata.n_obs, 16) and np.isfinite(z).all()
    assert model.history["train_loss_dab"].shape[0] == 1


def test_validation_loss_is_the_masked_value_mse_and_the_total_is_kept(
    two_batch_pretrained, two_batches
):
    """Model selection follows the official tutorial: ``validation_loss`` is the masked MSE."""
    adata = two_batches(4)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata, dsbn=False)
    model.train(max_epochs=2, batch_size=8, validation_size=0.25, accelerator="cpu",
                enable_progress_bar=False)  # fmt: skip
    h = model.history
    mse = h["validation_loss_mse"].to_numpy().ravel()
    np.testing.assert_array_equal(h["validation_loss"].to_numpy().ravel(), mse)
    weights = {"validation_loss_gepc": 1, "validation_loss_ecs": 10, "validation_loss_dab": 1}
    total = mse + sum(h[k].to_numpy().ravel() * w for k, w in weights.items())
    np.testing.assert_allclose(h["validation_loss_total"].to_numpy().ravel(), total, rtol=1e-5)
    assert "train_loss_mse" in h and "train_loss_total" not in h


def test_model_from_scratch_keeps_batch_conditioned_decoders(two_batches):
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration(adata, d_model=16, n_layers=1, n_heads=2, use_batch_labels=True)
    assert model.module.config.use_batch_labels and hasattr(model.module, "batch_encoder")


def test_default_length_scales_with_the_data():
    from omicformer.scgpt.model._integration import default_epochs

    # about 8,000 cell passes, 1 to 15 epochs
    assert [default_epochs(n) for n in (100, 533, 1133, 5000, 9000, 100_000)] == [
        15, 15, 7, 2, 1, 1,
    ]  # fmt: skip


def test_an_untrained_model_embeds_with_a_warning(two_batch_pretrained, two_batches, integrated,
                                                  tmp_path):  # fmt: skip
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    fresh = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata)
    with pytest.warns(UserWarning, match=r"not trained.*ScGPTIntegration\.train\(\)"):
        z = fresh.get_latent_representation(progress=False)
    assert z.shape == (adata.n_obs, 32)
    _, _, trained = integrated  # trained, and loaded from a folder saved trained: no warning
    trained.save(tmp_path / "integ")
    for model in (trained, ScGPTIntegration.load(tmp_path / "integ")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            model.get_latent_representation(adata, progress=False)


def test_a_trained_model_passed_in_embeds_at_its_own_length(two_batch_pretrained, two_batches):
    # max_len=None read as 256 for it; the model was trained (and tl.embed reads it) at 32
    _, model = tl.integrate(two_batches(), batch_key="batch", model=two_batch_pretrained,
                            max_len=32, return_model=True, copy=True, **QUICK)  # fmt: skip
    again = tl.integrate(two_batches(), batch_key="batch", model=model, copy=True,
                         correction=None, progress=False)  # fmt: skip
    assert again.uns["scgpt"]["X_scgpt_integrated"]["params"]["max_len"] == 32
    reused = tl.integrate(two_batches(), batch_key="batch", model=model, max_len=32, copy=True,
                          correction=None, progress=False)  # fmt: skip
    np.testing.assert_array_equal(again.obsm["X_scgpt_integrated"],
                                  reused.obsm["X_scgpt_integrated"])  # fmt: skip


def test_a_refused_mask_ratio_leaves_the_dropout_as_it_was(integrated):
    _, _, model = integrated
    rates = {m.p for m in model.module.modules() if isinstance(m, torch.nn.Dropout)}
    with pytest.raises(ValueError, match=r"mask_ratio=1.5 must lie strictly between 0 and 1"):
        model.train(max_epochs=1, dropout=0.5, mask_ratio=1.5, enable_progress_bar=False)
    assert {m.p for m in model.module.modules() if isinstance(m, torch.nn.Dropout)} == rates
