"""scgpt.tl.integrate and ScGPTIntegration on bad or unusual input: keys, genes, batch labels."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTIntegration

N_GENES = 60


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_key": "donor"}, KeyError, "batch_key='donor' not found.*columns"),
        ({"batch_key": None}, ValueError, r"batch_key=None: .*each cell's batch \(columns: "),
        ({"batch_key": "batch", "labels_key": "celltype"}, KeyError, "labels_key='celltype'"),
        ({"batch_key": "one"}, ValueError, "only one batch"),
        ({"batch_key": "batch", "labels_key": "rare"}, ValueError, "fewer than 2 cells: \\['x'\\]"),
        ({"batch_key": "batch", "labels_key": "none"}, ValueError, "no labels"),
        ({"batch_key": "batch", "labels_key": "batch"}, ValueError, "labels_key='batch' is the"),
        ({"batch_key": "batch", "model": 3}, TypeError, "not understood"),
        ({"batch_key": "batch", "model": "/no/such/folder"}, FileNotFoundError, "no such folder"),
        ({"batch_key": "batch", "ecs_threshold": 2.0}, ValueError, "ecs_threshold"),
        ({"batch_key": "batch", "dab_weight": -1.0}, ValueError, "dab_weight"),
        ({"batch_key": "batch", "mnn_weight": -1.0}, ValueError, "mnn_weight"),
        ({"batch_key": "batch", "gene_selection": "top"}, ValueError, "gene_selection='top'"),
        ({"batch_key": "batch", "max_len": 10.5}, ValueError, "max_len=10.5 must be an integer"),
        ({"batch_key": "batch", "random_state": None}, ValueError, "random_state=None must be"),
    ],
)
def test_bad_input_raises_before_any_change(
    two_batch_pretrained, kwargs, error, match, two_batches
):
    adata = two_batches(2)
    adata.obs["one"] = "x"
    adata.obs["rare"] = ["x"] + ["y"] * (adata.n_obs - 1)
    adata.obs["none"] = np.nan
    before = adata.copy()
    kwargs = {"model": two_batch_pretrained, **kwargs}
    with pytest.raises(error, match=match):
        tl.integrate(adata, progress=False, **kwargs)
    assert list(adata.obs.columns) == list(before.obs.columns) and not adata.uns
    assert not adata.obsm


def test_a_batch_named_as_a_missing_value_is_said(two_batch_pretrained, two_batches):
    # obs[...].astype(str) wrote NaN batches as "nan": integrated as a batch, and said so
    adata = two_batches(2)
    batch = adata.obs["batch"].astype(str).to_numpy().copy()
    batch[:3] = "nan"
    adata.obs["batch"] = batch
    with pytest.warns(UserWarning, match=r"obs\['batch'\]: 3 cells are in the batch 'nan'") as rec:
        tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                     batch_size=16, progress=False)  # fmt: skip
    assert sum("in the batch 'nan'" in str(w.message) for w in rec) == 1  # said once
    assert adata.obsm["X_scgpt_integrated"].shape[0] == adata.n_obs


def test_genes_outside_vocab_are_dropped_and_reported(two_batch_pretrained, caplog, two_batches):
    adata = two_batches(2)
    extra = ad.AnnData(sp.csr_matrix(np.ones((adata.n_obs, 5), np.float32)), obs=adata.obs,
                       var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(5)]))  # fmt: skip
    both = ad.concat([adata, extra], axis=1, merge="first")
    with caplog.at_level("INFO", logger="omicformer.scgpt._integrate"):
        tl.integrate(both, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                     batch_size=16, progress=False)  # fmt: skip
    info = both.uns["scgpt"]["X_scgpt_integrated"]
    assert (info["n_genes_matched"], info["n_genes_total"]) == (N_GENES, N_GENES + 5)
    assert "5 of 65 genes are not in the model's vocabulary" in caplog.text


def test_too_few_vocabulary_genes(two_batch_pretrained, two_batches):
    adata = two_batches(2)
    adata.var_names = [f"G{i}" if i < 40 else f"X{i}" for i in range(N_GENES)]
    with pytest.raises(ValueError, match="only 40 of the 60 genes"):
        tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, progress=False)


def test_model_class_needs_batches(two_batches):
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata)
    with pytest.raises(ValueError, match="batch_key"):
        ScGPTIntegration.load_pretrained("default", adata)


def test_numbered_batches_embed_with_the_fitted_model(two_batch_pretrained, two_batches):
    adata = two_batches()
    adata.obs["batch"] = adata.obs["batch"].map({"a": 0, "b": 1}).astype(int)
    model = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                         batch_size=16, correction=None, progress=False,
                         return_model=True)  # fmt: skip
    out = tl.embed(adata, model=model, batch_key="batch", progress=False, copy=True)
    np.testing.assert_allclose(out.obsm["X_scgpt"], adata.obsm["X_scgpt_integrated"], atol=1e-5)


def test_returned_model_reads_the_callers_batch_key(two_batch_pretrained, two_batches):
    # the model fine-tuned on a private copy registers the caller's column, not an internal
    # one: with DSBN an unrelated obs["batch"] (as sc.concat writes) must not pick the layers
    adata = two_batches()
    adata.obs["donor"] = adata.obs["batch"].map({"a": "d1", "b": "d2"})
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")  # not the batches
    model = tl.integrate(adata, batch_key="donor", model=two_batch_pretrained, max_epochs=1,
                         batch_size=16, dsbn=True, mnn_weight=0.0, progress=False,
                         return_model=True)  # fmt: skip
    assert model.get_setup_arg("batch_key") == "donor" and model.batches_ == ["d1", "d2"]
    again = model.get_latent_representation(adata, progress=False)
    np.testing.assert_allclose(again, adata.obsm["X_scgpt_integrated"], atol=1e-5)
    swapped = adata.copy()
    swapped.obs["donor"] = swapped.obs["donor"].map({"d1": "d2", "d2": "d1"})  # the layers matter
    assert np.abs(model.get_latent_representation(swapped, progress=False) - again).max() > 1e-3


def test_batch_codes_compare_as_text():
    from omicformer.scgpt._resolve import batch_codes

    np.testing.assert_array_equal(batch_codes(np.array([1, 0, 1]), ["0", "1"], "b"), [1, 0, 1])
    np.testing.assert_array_equal(batch_codes([True, False], [False, True], "b"), [1, 0])
    with pytest.raises(ValueError, match=r"batches \['2'\] unseen in training"):
        batch_codes(np.array([0, 2]), ["0", "1"], "b")
    # a missing batch is named as missing (it read as the batch 'nan', or joined one so named)
    for missing in (np.nan, None):
        with pytest.raises(
            ValueError, match=r"obs\['b'\] is missing for 1 cell\(s\) \(positions \[1\]"
        ):
            batch_codes(np.array(["a", missing], dtype=object), ["a", "nan", "None"], "b")
    with pytest.raises(ValueError, match="is missing for 1 cell"):
        batch_codes(pd.Categorical(["a", None, "a"]), ["a"], "b")


def test_integrate_backed_refuses_a_key_with_a_slash_before_the_work(
    two_batches, two_batch_pretrained, tmp_path
):
    # the embedding of a backed AnnData goes to its .h5ad, where "a/b" would be nested groups
    two_batches(2).write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"key_added='a/b' contains '/'.*e\.g\. 'a_b'"):
        tl.integrate(backed, batch_key="batch", model=two_batch_pretrained, key_added="a/b",
                     max_epochs=1, device="cpu", progress=False)  # fmt: skip
    assert not backed.obsm and "scgpt" not in backed.uns
    backed.file.close()


def test_a_symbol_on_two_columns_is_read_twice_as_tl_embed_reads_it(
    two_batch_pretrained, two_batches, tmp_path
):
    # two Ensembl ids sharing a symbol: both columns are read (two tokens), as tl.embed, the
    # model classes and pp.match_vocab read them; integrate read only the first, so its obsm
    # differed from its own model's embedding of the same AnnData
    adata = two_batches()
    symbols = adata.var_names.to_numpy().copy()
    symbols[1] = symbols[0]
    adata.var["feature_name"] = symbols
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    model = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                         batch_size=16, correction=None, progress=False,
                         return_model=True)  # fmt: skip
    info = adata.uns["scgpt"]["X_scgpt_integrated"]
    assert info["n_genes_matched"] == int((model.gene_ids_ >= 0).sum()) == N_GENES
    assert (model.gene_ids_ == model.gene_ids_[0]).sum() == 2
    z = adata.obsm["X_scgpt_integrated"]
    np.testing.assert_allclose(model.get_latent_representation(adata, progress=False), z,
                               atol=1e-5)  # fmt: skip
    model.save(tmp_path / "m")
    again = tl.embed(adata, model=tmp_path / "m", batch_key="batch", progress=False, copy=True)
    np.testing.assert_allclose(again.obsm["X_scgpt"], z, atol=1e-5)
