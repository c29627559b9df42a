import warnings

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from matplotlib.figure import Figure

from omicformer.scgpt import pl


def test_loss_curve_from_history():
    hist = {
        "train_loss": pd.DataFrame({"train_loss": [3.0, 2.0, 1.5]}),
        "validation_loss": pd.DataFrame({"validation_loss": [3.1, 2.2, 1.9]}),
    }
    ax = pl.loss_curve(hist, show=False)
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.5]
    with pytest.raises(ValueError, match="No loss history"):
        pl.loss_curve({}, show=False)
    plt.close("all")
    with pytest.raises(KeyError, match="train_loss_ecs"):
        pl.loss_curve(hist, keys=("train_loss", "train_loss_ecs"), show=False)
    assert plt.get_fignums() == []  # checked before any figure is made


def test_loss_curve_of_an_ensemble_or_other_object_says_what_to_pass(clf_trained):
    # tl.annotate(n_models=2, return_model=True) gives an ensemble: "argument ... is not
    # iterable" before
    from omicformer.scgpt.model import ScGPTClassifierEnsemble

    ensemble = ScGPTClassifierEnsemble([clf_trained, clf_trained])
    with pytest.raises(ValueError, match=r"one training history per member.*members\[0\]"):
        pl.loss_curve(ensemble)
    ax = pl.loss_curve(ensemble.members[0], show=False)
    assert ax.get_title() == "ScGPTClassifier training"  # was "scGPT pretraining"
    assert (
        pl.loss_curve(dict(ensemble.members[0].history), show=False).get_title() == "scGPT training"
    )
    with pytest.raises(TypeError, match="pass a trained model or its history"):
        pl.loss_curve(3.5)


def test_loss_curve_per_step_uses_the_recorded_steps():
    steps = pd.DataFrame(
        {"train_loss_step": [5.0, 4.0, 3.5]}, index=pd.Index([0, 10, 20], name="step")
    )
    ax = pl.loss_curve({"train_loss_step": steps}, keys=("train_loss_step",), show=False)
    assert list(ax.lines[0].get_xdata()) == [0, 10, 20]
    assert ax.get_xlabel() == "step"


def test_loss_curve_draws_each_loss_at_its_recorded_epochs():
    # scvi-tools' history: a loss validated every other epoch is indexed by those epochs (from 0)
    hist = {
        "train_loss": pd.DataFrame(
            {"train_loss": [4.0, 3.0, 2.0, 1.0]}, index=pd.Index([0, 1, 2, 3], name="epoch")
        ),
        "validation_loss": pd.DataFrame(
            {"validation_loss": [3.5, 1.5]}, index=pd.Index([1, 3], name="epoch")
        ),
    }
    ax = pl.loss_curve(hist, show=False)
    train, val = ax.lines
    assert list(train.get_xdata()) == [1, 2, 3, 4]  # epochs counted from 1 on the axis
    assert list(val.get_xdata()) == [2, 4]  # the 2nd and 4th epochs, not the 1st and 2nd
    assert list(val.get_ydata()) == [3.5, 1.5]
    ax = pl.loss_curve({"train_loss": [4.0, 3.0]}, show=False)  # lists: one value per epoch
    assert list(ax.lines[0].get_xdata()) == [1, 2]


def test_a_figure_that_cannot_be_saved_is_closed(tmp_path):
    # a folder under a file (or not writable): the error, and no figure left open to show
    import matplotlib.pyplot as plt

    plt.close("all")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        pl.loss_curve({"train_loss": [3.0, 2.0]}, show=False, save=tmp_path / "file" / "x.png")
    assert plt.get_fignums() == []


def test_loss_curve_saves_where_scanpy_saves(tmp_path):
    # scanpy writes figdir / f"{name}{save without extension}{plot_suffix}.{extension}", and
    # every plot when save=None and sc.settings.autosave is set
    names = ("figdir", "file_format_figs", "plot_suffix", "autosave")
    saved = {name: getattr(sc.settings, name) for name in names}
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path, "png"
    sc.settings.plot_suffix, sc.settings.autosave = "_v2", True
    hist = {"train_loss": [3.0, 2.0]}
    try:
        assert pl.loss_curve(hist, show=False) is not None
        pl.loss_curve(hist, show=False, save="_run1.pdf")
        import matplotlib.pyplot as plt

        n_open = len(plt.get_fignums())
        pl.loss_curve(hist, show=False, save=".svg")  # the extension alone: was ".svg.png"
        assert len(plt.get_fignums()) == n_open  # a saved figure is closed, as scanpy does
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "scgpt_loss_curve_run1_v2.pdf",
            "scgpt_loss_curve_v2.png",
            "scgpt_loss_curve_v2.svg",
        ]
        pl.loss_curve(hist, show=False, save=False)
        sc.settings.autosave = False
        pl.loss_curve(hist, show=False)
    finally:
        for name, value in saved.items():
            setattr(sc.settings, name, value)
    assert len(list(tmp_path.iterdir())) == 3


# ---------------------------------------------------------------- integration
N_CELLS = 60


def _adata(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(["b1", "b2"], N_CELLS)),
            "cell_type": rng.choice(["T", "B", "NK"], N_CELLS),  # strings: scanpy would convert
        },
        index=[f"cell{i}" for i in range(N_CELLS)],
    )
    adata = ad.AnnData(X=rng.poisson(1.0, (N_CELLS, 20)).astype(np.float32), obs=obs)
    adata.var_names = [f"gene{i}" for i in range(20)]
    adata.obsm["X_scgpt"] = rng.normal(size=(N_CELLS, 8))
    adata.obsm["X_scgpt_integrated"] = rng.normal(size=(N_CELLS, 8))
    return adata


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "obsm": sorted(adata.obsm.keys()),
        "obsp": sorted(adata.obsp.keys()),
        "uns": sorted(adata.uns.keys()),
        "obs_dtypes": adata.obs.dtypes.astype(str).to_dict(),
        "X": adata.X.copy(),
        "X_scgpt": adata.obsm["X_scgpt"].copy() if "X_scgpt" in adata.obsm else None,
    }


def _panels(fig):
    """The scatter panels (scanpy adds colour-bar axes for continuous keys)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_integration_layout_and_caller_untouched(tmp_path):
    adata = _adata()
    before = _snapshot(adata)
    path = tmp_path / "out" / "integration.png"
    fig = pl.integration(
        adata, batch_key="batch", color=["cell_type", "gene3"], show=False, save=path
    )
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert len(panels) == 6  # 3 rows (batch, cell_type, gene3) x 2 columns
    assert [ax.get_title() for ax in panels] == [
        "before (X_scgpt)\nbatch",
        "after (X_scgpt_integrated)\nbatch",
        "cell_type",
        "cell_type",
        "gene3",
        "gene3",
    ]
    grid = {
        (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in panels
    }
    assert grid == {(r, c) for r in range(3) for c in range(2)}
    for ax in panels:
        assert ax.collections[0].get_offsets().shape == (N_CELLS, 2)
    assert path.is_file() and path.stat().st_size > 0
    # Same cell -> same colour in both columns (one palette for the batch row).
    np.testing.assert_array_equal(
        panels[0].collections[0].get_facecolors(), panels[1].collections[0].get_facecolors()
    )
    assert len({tuple(c) for c in panels[0].collections[0].get_facecolors()}) == 2
    # The caller's AnnData is left as it was: no UMAP, graph, palette or dtype change.
    after = _snapshot(adata)
    for key in ("obsm", "obsp", "uns", "obs_dtypes"):
        assert after[key] == before[key], key
    np.testing.assert_array_equal(after["X"], before["X"])
    np.testing.assert_array_equal(after["X_scgpt"], before["X_scgpt"])


def test_integration_uses_cached_umap_and_palette():
    adata = _adata()
    cached = np.random.default_rng(1).normal(size=(N_CELLS, 2))
    adata.obsm["X_umap_X_scgpt_integrated"] = cached
    adata.uns["batch_colors"] = ["#ff0000", "#0000ff"]
    fig = pl.integration(adata, batch_key="batch", show=False)
    left, right = _panels(fig)
    np.testing.assert_allclose(right.collections[0].get_offsets(), cached)
    assert not np.allclose(left.collections[0].get_offsets(), cached)  # computed, not the cache
    red = adata.obs["batch"].to_numpy() == "b1"
    colors = right.collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(colors[red], np.tile([1.0, 0.0, 0.0], (red.sum(), 1)))
    np.testing.assert_allclose(colors[~red], np.tile([0.0, 0.0, 1.0], ((~red).sum(), 1)))
    assert list(adata.uns["batch_colors"]) == ["#ff0000", "#0000ff"]
    assert "X_umap_X_scgpt" not in adata.obsm  # the cache is never written
    plt.close("all")
    adata.obsm["X_umap_X_scgpt_integrated"] = cached[:, :1]  # no layout: refused up front
    with pytest.raises(ValueError, match=r"has shape \(\d+, 1\); a layout needs 2 columns"):
        pl.integration(adata, batch_key="batch", show=False)
    assert plt.get_fignums() == []


def test_integration_keeps_the_users_torch_thread_count(monkeypatch):
    # numba starting its OpenMP threads (the process's first neighbours or UMAP) reset torch's
    # thread count to the cores': here sc.pp.neighbors does so, as numba did
    import torch

    neighbors = sc.pp.neighbors

    def resetting(*args, **kwargs):
        torch.set_num_threads(2)
        return neighbors(*args, **kwargs)

    monkeypatch.setattr(sc.pp, "neighbors", resetting)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plt.close(pl.integration(_adata(), batch_key="batch", show=False))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_integration_sparse_basis_draws_as_its_dense_values():
    # a scipy sparse obsm entry (e.g. a one-hot or thresholded representation) is densified
    import scipy.sparse as sp

    dense = _adata()
    sparse = dense.copy()
    sparse.obsm["X_scgpt"] = sp.csr_matrix(dense.obsm["X_scgpt"])
    panels = [
        _panels(pl.integration(a, batch_key="batch", random_state=0, show=False))[0]
        for a in (dense, sparse)
    ]
    np.testing.assert_allclose(
        panels[0].collections[0].get_offsets(), panels[1].collections[0].get_offsets()
    )
    assert sp.issparse(sparse.obsm["X_scgpt"])


def test_integration_before_falls_back_to_pca():
    adata = _adata()
    del adata.obsm["X_scgpt"]
    rng = np.random.default_rng(2)
    adata.obsm["X_pca"] = rng.normal(size=(N_CELLS, 5))
    pca_umap = rng.normal(size=(N_CELLS, 2))
    adata.obsm["X_umap_X_pca"] = pca_umap
    adata.obsm["X_umap_X_scgpt_integrated"] = rng.normal(size=(N_CELLS, 2))
    fig = pl.integration(adata, batch_key="batch", show=False)
    left, _ = _panels(fig)
    assert left.get_title() == "before (X_pca)\nbatch"
    np.testing.assert_allclose(left.collections[0].get_offsets(), pca_umap)


def test_integration_before_computes_pca_of_x():
    adata = _adata()
    del adata.obsm["X_scgpt"]
    adata.obsm["X_umap_X_scgpt_integrated"] = np.zeros((N_CELLS, 2))
    fig = pl.integration(adata, batch_key="batch", n_neighbors=10, random_state=3, show=False)
    left, _ = _panels(fig)
    assert left.get_title() == "before (PCA of X)\nbatch"
    ref = ad.AnnData(X=adata.X.copy())
    sc.pp.pca(ref, n_comps=19)
    sc.pp.neighbors(ref, use_rep="X_pca", n_neighbors=10, random_state=3)
    sc.tl.umap(ref, random_state=3)
    np.testing.assert_allclose(left.collections[0].get_offsets(), ref.obsm["X_umap"], rtol=1e-5)
    assert "X_pca" not in adata.obsm


def test_pca_of_x_reads_x_without_a_copy():
    # scanpy's PCA of the matrix itself leaves it as it is: the copy of X (+244 MiB of 900 MiB
    # at 32k cells) is not needed; the same components as scanpy's PCA of a copy
    import tracemalloc

    import scipy.sparse as sp

    from omicformer.scgpt.pl import _pca_of_x

    X = sp.random(6000, 3000, density=0.1, format="csr", dtype=np.float32, random_state=0)
    adata = ad.AnnData(X)
    before = X.copy()
    tracemalloc.start()
    got = _pca_of_x(adata).obsm["X_pca"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.75 * (X.data.nbytes + X.indices.nbytes)  # a copy alone is 1x
    assert (adata.X != before).nnz == 0
    ref = ad.AnnData(X=before)
    sc.pp.pca(ref, n_comps=50)
    np.testing.assert_allclose(np.abs(got), np.abs(ref.obsm["X_pca"]), rtol=1e-4, atol=1e-5)


def test_integration_before_computes_pca_of_a_backed_x(tmp_path):
    adata = _adata()
    del adata.obsm["X_scgpt"]
    adata.obsm["X_umap_X_scgpt_integrated"] = np.zeros((N_CELLS, 2))
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")  # X on disk: no copy() (was)
    left, _ = _panels(pl.integration(backed, batch_key="batch", n_neighbors=10, show=False))
    assert left.get_title() == "before (PCA of X)\nbatch"
    assert left.collections[0].get_offsets().shape == (N_CELLS, 2)
    backed.file.close()


def test_integration_show_and_save_default_name(tmp_path):
    adata = _adata()
    adata.obsm["X_umap_X_scgpt"] = np.random.default_rng(4).normal(size=(N_CELLS, 2))
    adata.obsm["X_umap_X_scgpt_integrated"] = np.random.default_rng(5).normal(size=(N_CELLS, 2))
    figdir = sc.settings.figdir
    sc.settings.figdir = tmp_path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Agg: "non-interactive, cannot be shown"
            assert pl.integration(adata, batch_key="batch", show=True, save=True) is None
    finally:
        sc.settings.figdir = figdir
    assert (tmp_path / f"scgpt_integration.{sc.settings.file_format_figs}").is_file()


def test_integration_errors():
    adata = _adata()
    with pytest.raises(KeyError, match=r"'donor'.*available.*'batch', 'cell_type'"):
        pl.integration(adata, batch_key="donor", show=False)
    with pytest.raises(KeyError, match=r"'nope'.*'batch', 'cell_type'"):
        pl.integration(adata, batch_key="batch", color=["cell_type", "nope"], show=False)
    with pytest.raises(KeyError, match=r"run scgpt\.tl\.integrate first.*'X_scgpt'"):
        pl.integration(adata, batch_key="batch", basis_after="X_scvi", show=False)
    with pytest.raises(KeyError, match=r"basis_before 'X_harmony'.*'X_scgpt_integrated'"):
        pl.integration(adata, batch_key="batch", basis_before="X_harmony", show=False)
    with pytest.raises(ValueError, match=r"At least 4 cells .*; got 3"):
        pl.integration(adata[:3].copy(), batch_key="batch", show=False)
    dup = adata.copy()
    dup.var_names = ["gene0", "gene0", *dup.var_names[2:]]
    with pytest.raises(ValueError, match=r"'gene0' names 2 genes of adata\.var_names"):
        pl.integration(dup, batch_key="batch", color="gene0", show=False)
    nan = adata.copy()
    nan.obsm["X_scgpt_integrated"][[1, 3]] = np.nan
    with pytest.raises(
        ValueError, match=r"'X_scgpt_integrated'.*NaN .* 2 cells .*'cell1', 'cell3'"
    ):
        pl.integration(nan, batch_key="batch", show=False)
    assert plt.get_fignums() == []  # nothing drawn before the errors
    nan.obsm["X_umap_X_scgpt_integrated"] = np.zeros((nan.n_obs, 2))  # its UMAP stored: drawn
    assert pl.integration(nan, batch_key="batch", show=False) is not None


def test_integration_smallest_input_draws():
    fig = pl.integration(_adata()[:4].copy(), batch_key="batch", show=False)
    assert len(_panels(fig)) == 2
    plt.close(fig)


def test_integration_numbered_batches_are_categories_and_genes_read_where_they_are():
    adata = _adata()
    adata.raw = adata[:, 5:].copy()  # raw lacks gene0..gene4, which X has
    adata.X = adata.X * 0.0 + np.arange(N_CELLS, dtype=np.float32)[:, None]  # gene0 = cell index
    adata.obs["batch"] = adata.obs["batch"].cat.codes.astype(int)  # 0 / 1, not a scale
    adata.obsm["X_umap_X_scgpt"] = np.random.default_rng(4).normal(size=(N_CELLS, 2))
    adata.obsm["X_umap_X_scgpt_integrated"] = np.random.default_rng(5).normal(size=(N_CELLS, 2))
    fig = pl.integration(adata, batch_key="batch", color=["gene0", "gene7"], show=False)
    batch_ax, gene_ax = fig.axes[0], fig.axes[2]
    assert batch_ax.get_title().endswith("batch") and gene_ax.get_title().endswith("gene0")
    # a legend of two batches, not a colour bar
    assert [t.get_text() for t in batch_ax.get_legend().get_texts()] == ["0", "1"]
    # gene0 from X (raw does not have it): its values are the cell indices
    np.testing.assert_allclose(gene_ax.collections[0].get_array(), np.arange(N_CELLS))
    assert pd.api.types.is_integer_dtype(adata.obs["batch"])  # the caller's column unchanged
    plt.close(fig)


def test_integration_colours_by_nullable_booleans_and_mixed_labels():
    # a boolean column with pd.NA failed inside scanpy (numpy's boolean negative), and so did an
    # object column of strings and integers; both are groups, as a batch column of them was
    adata = _adata()
    adata.obsm["X_umap_X_scgpt"] = np.random.default_rng(4).normal(size=(N_CELLS, 2))
    adata.obsm["X_umap_X_scgpt_integrated"] = np.random.default_rng(5).normal(size=(N_CELLS, 2))
    flags = [None if i % 7 == 0 else bool(i % 2) for i in range(N_CELLS)]
    adata.obs["flag"] = pd.array(flags, dtype="boolean")
    adata.obs["mixed"] = pd.Series(["a" if i % 3 else 1 for i in range(N_CELLS)], dtype=object,
                                   index=adata.obs_names)  # fmt: skip
    before = _snapshot(adata)
    fig = pl.integration(adata, batch_key="batch", color=["flag", "mixed"], show=False)
    flag_ax, mixed_ax = fig.axes[2], fig.axes[4]
    assert [t.get_text() for t in flag_ax.get_legend().get_texts()] == ["False", "True", "NA"]
    assert [t.get_text() for t in mixed_ax.get_legend().get_texts()] == ["1", "a"]
    after = _snapshot(adata)
    assert after["obs_dtypes"] == before["obs_dtypes"]  # the caller's columns unchanged
    plt.close(fig)
    # numbers held as objects stay a colour scale (a first version made them groups)
    adata.obs["score"] = pd.Series(np.arange(N_CELLS) % 11, dtype=object, index=adata.obs_names)
    fig = pl.integration(adata, batch_key="batch", color="score", show=False)
    assert fig.axes[2].get_legend() is None and len(fig.axes) > 4  # colour bars, no legend
    plt.close(fig)


def test_loss_curve_takes_one_key_as_a_string():
    ax = pl.loss_curve({"train_loss": [3.0, 2.0], "validation_loss": [4.0, 3.5]},
                       keys="validation_loss", show=False)  # fmt: skip
    assert [line.get_label() for line in ax.get_lines()] == ["validation_loss"]


@pytest.mark.slow
def test_integration_of_ten_thousand_cells():
    # from 4,096 cells scanpy's neighbours call pynndescent, whose 0.7.0 returned sparse arrays
    # that scanpy 1.11.5 could not read (AttributeError: getnnz): the plot of this many cells
    # failed, as did the README's sc.pp.neighbors (pyproject.toml keeps pynndescent < 0.7)
    rng = np.random.default_rng(0)
    n = 10_000
    adata = ad.AnnData(obs=pd.DataFrame({"batch": pd.Categorical(rng.choice(["a", "b"], n))},
                                        index=[f"c{i}" for i in range(n)]))  # fmt: skip
    adata.obsm["X_scgpt"] = rng.normal(size=(n, 32)).astype(np.float32)
    adata.obsm["X_scgpt_integrated"] = rng.normal(size=(n, 32)).astype(np.float32)
    panels = _panels(pl.integration(adata, batch_key="batch", show=False))
    assert [p.collections[0].get_offsets().shape for p in panels] == [(n, 2), (n, 2)]


def test_a_save_path_matplotlib_cannot_write_is_refused_before_the_work(tmp_path, monkeypatch):
    # matplotlib refused ".xyz" when writing, after the UMAPs and with the folder made
    from omicformer.scgpt import pl as scgpt_pl

    monkeypatch.setattr(scgpt_pl, "_umap", lambda *a, **k: pytest.fail("computed"))
    path = tmp_path / "new" / "fig.xyz"
    with pytest.raises(ValueError, match=r"cannot write \(\.xyz\); end it with one of .*'\.png'"):
        pl.integration(_adata(), batch_key="batch", show=False, save=path)
    with pytest.raises(ValueError, match=r"cannot write \(\.xyz\)"):
        pl.loss_curve({"train_loss": [3.0, 2.0]}, show=False, save=path)
    assert not (tmp_path / "new").exists() and not plt.get_fignums()
