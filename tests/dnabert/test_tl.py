import copy
import warnings

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

from omicformer.dnabert import pl, pp, tl
from omicformer.dnabert.model import DNABert

matplotlib.use("Agg")

REGIONS = ["chr1:10-90", "chr1-100-400", "chr2_0_60(-)", "chr2:50-150"]
KW = {"device": "cpu", "progress": False}


@pytest.fixture
def atac():
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(1, size=(5, len(REGIONS))).astype(np.float32))
    adata.var_names = REGIONS
    adata.var["peak"] = REGIONS
    adata.var["truth"] = pd.Categorical(["at", "gc", "gc", "at"])
    return adata


@pytest.fixture
def mlm(tiny):
    return DNABert(k=3, **tiny)


def test_embed_regions_writes_varm_and_params(atac, genome, mlm):
    path, chroms = genome
    assert tl.embed_regions(atac, fasta=path, model=mlm, batch_size=2, **KW) is None
    with pytest.warns(FutureWarning, match="passing fasta by position"):
        old = tl.embed_regions(atac, path, model=mlm, batch_size=2, copy=True, **KW)
    np.testing.assert_array_equal(old.varm["X_dnabert"], atac.varm["X_dnabert"])
    X = atac.varm["X_dnabert"]
    assert X.shape == (4, 32)
    assert X.dtype == np.float32
    params = atac.uns["dnabert"]["X_dnabert"]["params"]
    assert params["k"] == 3
    assert params["pooling"] == "mean"
    seqs = [chroms["chr1"][10:90], chroms["chr1"][100:400]]
    seqs += [pp.reverse_complement(chroms["chr2"][:60]), chroms["chr2"][50:150]]
    np.testing.assert_allclose(X, mlm.embed(seqs, **KW), rtol=1e-5, atol=1e-6)


def test_embed_regions_copy_region_key_and_mudata(atac, genome, mlm):
    path, _ = genome
    atac.var_names = [f"peak{i}" for i in range(4)]
    out = tl.embed_regions(
        atac, fasta=path, model=mlm, region_key="peak", copy=True, key_added="Z", **KW
    )
    assert "Z" in out.varm
    assert "Z" not in atac.varm
    mudata = pytest.importorskip("mudata")
    atac.var_names = REGIONS
    mdata = mudata.MuData({"atac": atac})
    tl.embed_regions(mdata, fasta=path, model=mlm, mod="atac", **KW)
    assert mdata.mod["atac"].varm["X_dnabert"].shape == (4, 32)
    tl.embed_regions(mdata["atac"], fasta=path, model=mlm, key_added="again", **KW)
    assert "again" in mdata.mod["atac"].varm


@pytest.mark.parametrize(
    ("names", "error", "match"),
    [
        (["chr1:10-90", "chr1:100", "chr2:0-60", "chr2:1-9"], ValueError, "Accepted forms"),
        (["chr1:10-90", "chrX:1-50", "chr2:0-60", "chr2:1-9"], ValueError, r"it has \['chr1'"),
        (["chr1:10-90", "chr1:300-500", "chr2:0-60", "chr2:1-9"], ValueError, "beyond the end"),
        (["chr1:10-90", "chr1:90-10", "chr2:0-60", "chr2:1-9"], ValueError, "start"),
        # a region shorter than k is named as the region, not as the list's 'seq_1'
        (["chr1:10-90", "chr1:398-400", "chr2:0-60", "chr2:1-9"], ValueError, "'chr1:398-400'"),
    ],
)
def test_bad_regions_leave_adata_untouched(atac, genome, mlm, names, error, match):
    path, _ = genome
    atac.var_names = names
    before = atac.copy()
    with pytest.raises(error, match=match):
        tl.embed_regions(atac, fasta=path, model=mlm, **KW)
    assert "X_dnabert" not in atac.varm
    assert "dnabert" not in atac.uns
    assert atac.var.equals(before.var)


def test_bad_arguments(atac, genome, mlm, tmp_path):
    path, _ = genome
    with pytest.raises(KeyError, match="region_key='nope'"):
        tl.embed_regions(atac, fasta=path, model=mlm, region_key="nope", **KW)
    gaps = atac.copy()
    gaps.var["peak"] = [REGIONS[0], None, np.nan, REGIONS[3]]  # was "Could not parse 'None'"
    for fn in (tl.embed_regions, tl.predict):
        with pytest.raises(ValueError, match=r"var\['peak'\] has no region for 2 of 4 entries"):
            fn(gaps, fasta=path, model=mlm, region_key="peak", **KW)
    with pytest.raises(FileNotFoundError):
        tl.embed_regions(atac, fasta=tmp_path / "missing.fa", model=mlm, **KW)
    with pytest.raises(ValueError, match="no classification head"):
        tl.predict(atac, model=mlm, fasta=path, **KW)
    with pytest.raises(ValueError, match="fasta= is required"):
        tl.predict(atac, model=mlm, **KW)
    with pytest.raises(TypeError, match="model must be"):
        tl.embed_regions(atac, fasta=path, model=3, **KW)
    atac.uns["dnabert"] = ["my", "notes"]  # where the parameters are recorded, as a dict
    with pytest.raises(ValueError, match=r"adata.uns\['dnabert'\] holds a list"):
        tl.embed_regions(atac, fasta=path, model=mlm, **KW)
    assert "X_dnabert" not in atac.varm and atac.uns["dnabert"] == ["my", "notes"]


def test_backed_inputs_that_cannot_hold_the_results_are_refused_before_the_model(
    atac, genome, mlm, finetuned, tmp_path, monkeypatch
):
    path, _ = genome
    atac.write_h5ad(tmp_path / "atac.h5ad")
    backed = ad.read_h5ad(tmp_path / "atac.h5ad", backed="r")
    for model in (mlm, finetuned):  # anndata's own error came after the model's whole pass
        monkeypatch.setattr(type(model), "embed", lambda *a, **k: pytest.fail("ran"))
        monkeypatch.setattr(type(model), "predict", lambda *a, **k: pytest.fail("ran"))
    for fn, model in ((tl.embed_regions, mlm), (tl.predict, finetuned)):
        with pytest.raises(ValueError, match="copy=True is not supported for backed"):
            fn(backed, fasta=path, model=model, copy=True, **KW)
        with pytest.raises(ValueError, match="view of a backed AnnData"):
            fn(backed[:, :3], fasta=path, model=model, **KW)
        with pytest.raises(ValueError, match=r"contains '/'.*backed AnnData's \.h5ad"):
            fn(backed, fasta=path, model=model, key_added="peaks/v1", **KW)
    assert not backed.varm and "dnabert" not in backed.uns
    backed.file.close()


def test_predict_anndata_and_sequences(atac, genome, finetuned):
    path, chroms = genome
    tl.predict(atac, model=finetuned, fasta=path, **KW)
    assert {"dnabert_prob_at", "dnabert_prob_gc", "dnabert_prediction"} <= set(atac.var)
    np.testing.assert_allclose(
        atac.var[["dnabert_prob_at", "dnabert_prob_gc"]].sum(1), 1, rtol=1e-5
    )
    assert atac.uns["dnabert"]["dnabert"]["params"]["labels"] == ["at", "gc"]
    frame = tl.predict({"a": chroms["chr1"][10:90], "b": "GGGCCC" * 10}, model=finetuned, **KW)
    assert list(frame.index) == ["a", "b"]
    np.testing.assert_allclose(
        frame["dnabert_prob_gc"].iloc[0], atac.var["dnabert_prob_gc"].iloc[0], rtol=1e-5
    )
    by_region = tl.predict(["chr1:10-90"], model=finetuned, fasta=path, **KW)
    assert list(by_region.index) == ["chr1:10-90"]
    copied = tl.predict(atac, model=finetuned, fasta=path, key_added="p2", copy=True, **KW)
    assert "p2_prediction" in copied.var
    assert "p2_prediction" not in atac.var


def test_plots(atac, genome, finetuned):
    path, _ = genome
    tl.predict(atac, model=finetuned, fasta=path, **KW)
    ax = pl.prediction_histogram(atac, label="gc", groupby="truth", show=False)
    assert ax.get_xlabel() == "P(gc)"
    ax = pl.region_track(atac, chrom="chr1", show=False)
    assert len(ax.patches) == 2
    ax = pl.loss_curve(finetuned, stage="finetune", smooth=4, show=False)
    assert ax.get_xlabel() == "optimizer step"
    frame = tl.predict(["ACGTACGTACGT"], model=finetuned, **KW)
    pl.prediction_histogram(frame, show=False)
    with pytest.raises(ValueError, match="No 'mlm' training history"):
        pl.loss_curve({})
    with pytest.raises(KeyError, match="not among"):
        pl.prediction_histogram(atac, label="nope")
    with pytest.raises(KeyError, match="chrom='chr9'"):
        pl.region_track(atac, chrom="chr9")
    with pytest.raises(ValueError, match="no regions"):  # was an IndexError
        pl.region_track(atac[:, :0], show=False)
    import matplotlib.pyplot as plt

    plt.close("all")
    # bad arguments: clear errors, and no figure left open
    with pytest.raises(KeyError, match="groupby='nope' is not a column"):
        pl.prediction_histogram(atac, label="gc", groupby="nope", show=False)
    with pytest.raises(ValueError, match="bins=0 must be"):
        pl.prediction_histogram(atac, label="gc", bins=0, show=False)
    with pytest.raises(ValueError, match="stage='mlmm' must be 'mlm'"):  # was "train first"
        pl.loss_curve(finetuned, stage="mlmm", show=False)
    with pytest.raises(TypeError, match="pass a DNABert or its history"):  # was AttributeError
        pl.loss_curve([1.0, 0.5], show=False)
    assert plt.get_fignums() == []


def test_predict_again_replaces_the_columns_of_key_added(atac, genome, finetuned):
    path, _ = genome
    other = copy.deepcopy(finetuned)
    other.labels_ = ["yes", "no"]  # the same head, other classes
    tl.predict(atac, model=other, fasta=path, **KW)
    tl.predict(atac, model=other, fasta=path, key_added="keep", **KW)
    tl.predict(atac, model=finetuned, fasta=path, **KW)
    probs = [c for c in atac.var if c.startswith("dnabert_prob_")]
    assert probs == ["dnabert_prob_at", "dnabert_prob_gc"]  # no stale yes/no columns
    assert {"keep_prob_yes", "keep_prob_no"} <= set(atac.var)  # another key_added is kept
    # the plot's default class is the last class of the model of the last call
    reordered = copy.deepcopy(finetuned)
    reordered.labels_ = ["gc", "at"]
    tl.predict(atac, model=reordered, fasta=path, **KW)
    assert pl.prediction_histogram(atac, show=False).get_xlabel() == "P(at)"
    assert pl.region_track(atac, show=False).get_ylabel() == "P(at)"
    import matplotlib.pyplot as plt

    plt.close("all")


def test_window_overlap_must_be_an_integer(atac, genome, mlm, finetuned):
    path, _ = genome
    match = r"window_overlap=10.7 must be an integer >= 0"  # it was cut to 10 silently
    with pytest.raises(ValueError, match=match):
        tl.predict(atac, model=finetuned, fasta=path, window_overlap=10.7, **KW)
    with pytest.raises(ValueError, match=match):
        tl.embed_regions(atac, model=mlm, fasta=path, window_overlap=10.7, **KW)
    assert "dnabert" not in atac.uns and "X_dnabert" not in atac.varm
    assert list(atac.var.columns) == ["peak", "truth"]


def test_predict_regions_named_like_sequences(genome, finetuned):
    path, chroms = genome
    by_seq = tl.predict(
        pd.Series([chroms["chr1"][10:90], chroms["chr2"][50:150]], index=["peak_a", "peak_b"]),
        model=finetuned,
        **KW,
    )
    regions = ["chr1:10-90", "chr2:50-150"]
    # a Series of regions is named by its index, as a Series of sequences (it was by region)
    series = tl.predict(pd.Series(regions, index=by_seq.index), model=finetuned, fasta=path, **KW)
    # a dict name -> region is named by its keys (it was refused as one unparsable region)
    mapping = tl.predict(
        dict(zip(by_seq.index, regions, strict=True)), model=finetuned, fasta=path, **KW
    )
    for frame in (series, mapping):
        assert frame.index.tolist() == ["peak_a", "peak_b"]
        pd.testing.assert_frame_equal(frame, by_seq, rtol=1e-6)


def test_mlm_loss_curve_from_history():
    history = {
        "mlm_train_loss_step": list(np.linspace(5, 3, 40)),
        "mlm_validation_loss": [4.0, 3.5],
    }
    ax = pl.loss_curve(history, smooth=5, show=False)
    assert len(ax.lines) == 3
    assert ax.lines[2].get_xdata().tolist() == [20.0, 40.0]  # two epochs of 20 steps


def test_mlm_loss_curve_draws_validation_at_the_end_of_its_epoch():
    from omicformer._core._callbacks import history_from_rows

    # 3 epochs of 3 steps, validated after the second only (check_val_every_n_epoch=2)
    history = history_from_rows({
        "mlm_train_loss": [(0, 3.0), (1, 2.0), (2, 1.5)],
        "mlm_train_loss_step": [(s, 4.0 - s / 3) for s in range(1, 10)],
        "mlm_validation_loss": [(1, 2.5)],
    })  # fmt: skip
    ax = pl.loss_curve(history, smooth=1, show=False)
    train, validation = ax.lines
    assert train.get_xdata().tolist() == list(range(1, 10))
    assert validation.get_xdata().tolist() == [6.0]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_predict_refuses_missing_sequences(finetuned):
    # "nan" would pass as n-a-n (N and A are valid bases); the NaN must be refused, by name
    with pytest.raises(ValueError, match=r"Sequence 'b' is nan \(float\), not a DNA string"):
        tl.predict(pd.Series(["ACGTACGT", np.nan], index=["a", "b"]), model=finetuned, **KW)
    with pytest.raises(ValueError, match=r"Sequence 'seq_1' is None \(NoneType\)"):
        tl.predict(["ACGTACGT", None], model=finetuned, **KW)
    with pytest.raises(ValueError, match=r"Sequence 'x' is 12345 \(int\)"):
        tl.predict({"x": 12345}, model=finetuned, **KW)
    with pytest.raises(ValueError, match=r"Sequence 'seq_0' is nan"):
        finetuned.embed([np.nan], **KW)


def test_embed_regions_second_positional_model_is_the_model(atac, genome, mlm, tmp_path):
    path, _ = genome
    folder = tmp_path / "model"
    folder.mkdir()  # a folder is a model (never a FASTA file)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a model second is no deprecated call
        for model in ("default", mlm, folder, str(folder)):
            with pytest.raises(ValueError, match="fasta= is required"):
                tl.embed_regions(atac, model, **KW)
        with pytest.raises(TypeError, match="pass fasta= and the others by keyword"):
            tl.embed_regions(atac, mlm, path, **KW)
        assert "X_dnabert" not in atac.varm and "dnabert" not in atac.uns
        tl.embed_regions(atac, mlm, fasta=path, batch_size=2, **KW)
    with pytest.warns(FutureWarning, match="passing fasta, model by position"):
        old = tl.embed_regions(atac, path, mlm, batch_size=2, copy=True, **KW)
    np.testing.assert_array_equal(old.varm["X_dnabert"], atac.varm["X_dnabert"])


@pytest.mark.zarr
def test_a_class_name_with_a_slash_gives_a_column_files_can_hold(atac, genome, finetuned, tmp_path):
    # the column "dnabert_prob_TF/other" made write_zarr fail and write_h5ad warn
    path, _ = genome
    named = copy.deepcopy(finetuned)
    named.labels_ = ["at", "TF/other"]
    tl.predict(atac, model=named, fasta=path, **KW)
    assert {"dnabert_prob_at", "dnabert_prob_TF_other"} <= set(atac.var)
    assert list(atac.var["dnabert_prediction"].cat.categories) == ["at", "TF/other"]
    atac.write_zarr(tmp_path / "atac.zarr")
    assert "dnabert_prob_TF_other" in ad.read_zarr(tmp_path / "atac.zarr").var
    for label in ("TF/other", None):  # the class as named, or the model's last one
        assert pl.prediction_histogram(atac, label=label, show=False).get_xlabel() == "P(TF/other)"
    frame = tl.predict(["ACGTACGTACGT"], model=named, **KW)  # a DataFrame: names as written
    assert pl.prediction_histogram(frame, label="TF/other", show=False).get_xlabel() == (
        "P(TF_other)"
    )
    assert pl.prediction_histogram(atac, label="TF_other", show=False).get_xlabel() == (
        "P(TF/other)"  # the class as its column writes it
    )
    # a file written before: the column kept the '/' (h5ad only warned)
    atac.var = atac.var.rename(columns={"dnabert_prob_TF_other": "dnabert_prob_TF/other"})
    assert pl.prediction_histogram(atac, show=False).get_xlabel() == "P(TF/other)"
    tl.predict(atac, model=finetuned, fasta=path, **KW)  # the old columns go, "/" or not
    assert [c for c in atac.var if c.startswith("dnabert_prob_")] == ["dnabert_prob_at",
                                                                     "dnabert_prob_gc"]  # fmt: skip
    named.labels_ = ["TF/other", "TF_other"]
    with pytest.raises(ValueError, match="same column name twice"):
        tl.predict(atac, model=named, fasta=path, **KW)
    import matplotlib.pyplot as plt

    plt.close("all")
