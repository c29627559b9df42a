"""scvi-tools' inherited API on ScGPT: accessors, saved-folder readers, clear errors."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt.model import ScGPT


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(2.0, (40, 30)).astype(np.float32) + 1)
    obs = pd.DataFrame({"b": ["x", "y"] * 20}, index=[f"c{i}" for i in range(40)])
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
    ScGPT.setup_anndata(adata, batch_key="b")
    return ScGPT(adata, d_model=8, n_layers=1, n_heads=2, dropout=0.2)


def test_accessors_and_init_params(model):
    assert model.get_setup_arg("batch_key") == "b"
    assert list(model.get_state_registry("batch").categorical_mapping) == ["x", "y"]
    params = model.init_params_["non_kwargs"]  # scvi-tools' _get_init_params layout
    assert params["d_model"] == 8 and params["dropout"] == 0.2 and "adata" not in params


def test_saved_folder_readers(model, tmp_path, capsys):
    model.save(tmp_path / "m")
    registry = ScGPT.load_registry(tmp_path / "m")
    assert registry["setup_args"]["batch_key"] == "b"
    ScGPT.view_setup_args(tmp_path / "m")
    assert "batch_key" in capsys.readouterr().out
    loaded = ScGPT.load(tmp_path / "m", adata=model.adata)
    assert loaded.init_params_["non_kwargs"]["d_model"] == 8
    model.view_registry(hide_state_registries=True)
    assert "Summary Statistics" in capsys.readouterr().out
    model.update_setup_method_args({"gene_key": None})
    assert model.get_setup_arg("gene_key") is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.get_normalized_expression(), "get_latent_representation"),
        (lambda m: m.differential_abundance(), "X_scgpt"),
        (lambda m: ScGPT.convert_legacy_save("a", "b"), "no conversion"),
    ],
)
def test_unsupported_methods_say_what_to_use(model, call, match):
    with pytest.raises(NotImplementedError, match=match):
        call(model)


def test_labels_field_codes_missing_labels_minus_one():
    from omicformer.scgpt.model import ScGPTClassifier

    X = sp.csr_matrix(np.ones((6, 3), np.float32))
    a = ad.AnnData(X, var=pd.DataFrame(index=["A", "B", "C"]))
    a.obs["y"] = pd.Categorical(["T", "B", None, "T", "B", np.nan])
    ScGPTClassifier.setup_anndata(a, labels_key="y")
    assert a.obs["_scvi_labels"].tolist() == [1, 0, -1, 1, 0, -1]  # categories sorted: B, T
    clf = ScGPTClassifier(a, d_model=8, n_layers=1, n_heads=2)
    assert clf.classes_ == ["B", "T"]  # no class for the unlabelled cells
    # without missing labels: exactly scvi-tools' field (codes and registry)
    from scvi.data.fields import CategoricalObsField

    full = a[[0, 1, 3, 4]].copy()
    full.obs["b"] = ["r2", "r1", "r1", "r2"]
    full.obs["y"] = full.obs["y"].cat.add_categories("unused")  # kept, as scvi-tools does
    ScGPTClassifier.setup_anndata(full, labels_key="y", batch_key="b")
    for key, reg in (("y", "labels"), ("b", "batch")):
        mine = full.obs[f"_scvi_{reg}"].tolist()
        state = ScGPTClassifier(full, d_model=8, n_layers=1, n_heads=2).get_state_registry(reg)
        scvi_field = CategoricalObsField(f"x_{reg}", key)
        scvi_state = scvi_field.register_field(full)
        assert mine == full.obs[f"_scvi_x_{reg}"].tolist()
        assert list(state.categorical_mapping) == list(scvi_state["categorical_mapping"])
    assert list(state.categorical_mapping) == ["r1", "r2"]
    a.obs["b"] = ["r1", None, "r1", "r1", "r2", "r2"]
    with pytest.raises(ValueError, match=r"obs\['b'\] has missing values"):
        ScGPTClassifier.setup_anndata(a, labels_key="y", batch_key="b")


def test_labels_field_reads_nullable_columns_and_missing_texts_as_tl_annotate(tmp_path):
    from omicformer.scgpt.model import ScGPTClassifier

    X = sp.csr_matrix(np.ones((6, 3), np.float32))
    a = ad.AnnData(X, var=pd.DataFrame(index=["A", "B", "C"]))
    # pandas' nullable integers with pd.NA: the labels "1" and "2", as int64 gives (not "1.0")
    a.obs["y"] = pd.array([1, 2, pd.NA, 1, 2, 2], dtype="Int64")
    ScGPTClassifier.setup_anndata(a, labels_key="y")
    assert a.obs["_scvi_labels"].tolist() == [0, 1, -1, 0, 1, 1]
    assert ScGPTClassifier(a, d_model=8, n_layers=1, n_heads=2).classes_ == ["1", "2"]
    # an empty label and the texts of missing values are missing (said), not classes
    for column in (
        ["T", "", "nan", "T", "B", "None"],
        pd.Categorical(
            ["T", " ", "<NA>", "T", "B", "nan"], categories=["", "B", "T", "nan", "<NA>", " "]
        ),
    ):
        a.obs["y"] = column
        with pytest.warns(UserWarning, match=r"obs\['y'\]: 3 cells .* read as missing"):
            ScGPTClassifier.setup_anndata(a, labels_key="y")
        assert a.obs["_scvi_labels"].tolist() == [1, -1, -1, 1, 0, -1]
        clf = ScGPTClassifier(a, d_model=8, n_layers=1, n_heads=2)
        assert clf.classes_ == ["B", "T"]
    # a saved model loaded onto cells labelled so: missing there too (was: unseen labels)
    clf.save(tmp_path / "m")
    b = a.copy()
    b.obs["y"] = ["nan", "B", "", "T", "T", "B"]
    with pytest.warns(UserWarning, match=r"obs\['y'\]: 2 cells .* read as missing"):
        loaded = ScGPTClassifier.load(tmp_path / "m", adata=b)
    assert loaded.adata.obs["_scvi_labels"].tolist() == [-1, 0, -1, 1, 1, 0]
    # a class a model saved before had (the label "None") stays that class
    from omicformer._core._anndata import missing_texts

    values = pd.Series(["None", "B", "nan", None, " "], dtype=object)
    expected = [False, False, True, False, True]  # None is missing already, not a text
    assert missing_texts(values, known=np.array(["B", "None"])).tolist() == expected


def test_batch_field_says_of_a_batch_named_as_a_missing_value():
    # obs["b"].astype(str) wrote NaN batches as "nan": one batch of their own (a batch may be
    # named so), said as tl.integrate says it; other batches raise no warning
    import warnings

    from omicformer.scgpt.model import ScGPTIntegration

    X = sp.csr_matrix(np.ones((6, 3), np.float32))
    a = ad.AnnData(X, var=pd.DataFrame(index=["A", "B", "C"]))
    a.obs["b"] = ["r1", "nan", "r1", "r2", "nan", "r2"]
    with pytest.warns(UserWarning, match=r"obs\['b'\]: 2 cells are in the batch 'nan'.*own"):
        ScGPTIntegration.setup_anndata(a, batch_key="b")
    assert a.obs["_scvi_batch"].tolist() == [1, 0, 1, 2, 0, 2]  # categories: nan, r1, r2
    a.obs["b"] = ["r1", "r3", "r1", "r2", "r3", "r2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScGPTIntegration.setup_anndata(a, batch_key="b")


def test_task_models_record_their_own_init_params(model):
    # scvi's _get_init_params read the subclass's signature (adata, **kwargs): a classifier
    # recorded none of its arguments, a perturbation model not its prior
    from omicformer.scgpt.model import ScGPTClassifier, ScGPTIntegration, ScGPTPerturbation

    a = model.adata.copy()
    ScGPTClassifier.setup_anndata(a, labels_key="b")
    clf = ScGPTClassifier(a, d_model=8, n_layers=1, n_heads=2, dropout=0.2)
    assert clf.init_params_["non_kwargs"]["d_model"] == 8
    assert clf.init_params_["non_kwargs"]["dropout"] == 0.2
    ScGPTIntegration.setup_anndata(a, batch_key="b")
    params = ScGPTIntegration(a, d_model=8, n_layers=1, n_heads=2).init_params_["non_kwargs"]
    assert params["dsbn"] is True and params["d_model"] == 8
    a.obs["condition"] = ["ctrl", "G1+ctrl"] * 20
    ScGPTPerturbation.setup_anndata(a, condition_key="condition", control="ctrl")
    pert = ScGPTPerturbation(a, d_model=8, n_layers=1, n_heads=2, prior=None)
    assert pert.init_params_["non_kwargs"]["prior"] is None
    assert pert.init_params_["non_kwargs"]["n_heads"] == 2


def test_scvi_save_and_load_arguments_are_refused_with_the_reason(model, tmp_path):
    # save(prefix=) was taken for an AnnData-writer argument and dropped: a second model
    # "saved with another prefix" replaced the first
    with pytest.raises(ValueError, match=r"save\(prefix=...\) is not supported.*own folder"):
        model.save(tmp_path / "m", prefix="first_")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['overwite'\]"):
        model.save(tmp_path / "m", overwite=True)
    with pytest.raises(ValueError, match=r"\['compression'\] are arguments of AnnData.write_h5ad"):
        model.save(tmp_path / "m", compression="gzip")
    assert not (tmp_path / "m").exists()
    model.save(tmp_path / "m", save_anndata=True, compression="gzip")
    with pytest.raises(TypeError, match=r"'device' \(scvi-tools' device= is not taken: the mod"):
        ScGPT.load(tmp_path / "m", device="cuda")
    with pytest.raises(TypeError, match=r"load\(\) got an unexpected keyword argument 'adta'\.$"):
        ScGPT.load(tmp_path / "m", adta=model.adata)


def test_scvi_training_arguments_say_what_to_pass_instead(model, monkeypatch):
    from omicformer.scgpt.model import ScGPTClassifier

    with pytest.raises(TypeError, match=r"scvi-tools' plan_kwargs= is not an argument here: pa"):
        model.train(max_epochs=1, plan_kwargs={"lr": 1e-3})
    a = model.adata.copy()
    ScGPTClassifier.setup_anndata(a, labels_key="b")
    clf = ScGPTClassifier(a, d_model=8, n_layers=1, n_heads=2)
    split = []
    monkeypatch.setattr(type(clf), "_fit", lambda self, plan, collate, data, indices, **kw:
                        split.extend(indices))  # fmt: skip
    with pytest.warns(FutureWarning, match=r"'train_size' is deprecated.*'validation_size'"):
        clf.train(max_epochs=1, train_size=0.75, accelerator="cpu")  # a task model's train too
    assert [len(rows) for rows in split] == [30, 10]  # 25% of 40 cells held out
    recorded = clf.train_config_["arguments"]  # as run: train_size was read as validation_size
    assert recorded["validation_size"] == 0.25 and "train_size" not in recorded


def test_setup_views_of_a_model_loaded_without_anndata(model, tmp_path, capsys):
    model.save(tmp_path / "m")
    bare = ScGPT.load(tmp_path / "m")
    for view in (bare.view_anndata_setup, bare.view_registry):  # AttributeError on None
        view()
        out = capsys.readouterr().out
        assert "'batch_key': 'b'" in out and "No AnnData is attached" in out
    bare.view_anndata_setup(model.adata)  # scvi's AssertionError: no manager store
    assert "Summary Statistics" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"set up your AnnData with ScGPT\.setup_anndata"):
        bare.view_anndata_setup(ad.AnnData(np.ones((2, 3), np.float32)))
