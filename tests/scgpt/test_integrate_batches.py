"""scgpt.tl.integrate: how the batches meet (minibatches, balancing, the corrections)."""

import inspect
import re
import warnings

import anndata as ad
import numpy as np
import pytest

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTIntegration

QUICK = {"max_epochs": 2, "batch_size": 16, "progress": False}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def integrated(two_batch_pretrained, two_batches):
    """``tl.integrate`` with DSBN (batches taken to hold different cells) and its model."""
    adata = two_batches()
    model = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, return_model=True,
                         dsbn=True, **QUICK)  # fmt: skip
    return adata, model


def test_mnn_correction_of_the_fine_tuned_embedding(integrated, two_batches):
    from omicformer._core._mnn import mnn_correct

    adata, model = integrated  # dsbn=True: batches taken to hold different cells
    info = adata.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["correction"] is None and info["correction"] is None
    kw = {"batch_key": "batch", "model": model, "copy": True, "progress": False}
    plain = tl.integrate(two_batches(), **kw)  # the trained model again: no retraining
    z0 = plain.obsm["X_scgpt_integrated"]
    np.testing.assert_allclose(z0, adata.obsm["X_scgpt_integrated"], atol=1e-5)
    out = tl.integrate(two_batches(), correction="mnn", **kw)
    batches = out.obs["batch"].astype(str).to_numpy()
    expected, report = mnn_correct(z0, batches, random_state=0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    z = out.obsm["X_scgpt_integrated"]
    np.testing.assert_allclose(z, expected, atol=1e-5)
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["correction"] == "mnn"
    assert info["correction"]["method"] == "mnn" and info["correction"]["order"] == ["a", "b"]
    table = info["correction"]["merged"]  # one row per merged batch, named in the index
    assert list(table.index) == ["b"] and table.loc["b", "pairs"] == report["pairs"]["b"]
    assert table.loc["b", "mixing"] == report["mixing"]["b"]
    assert table.loc["b", "sigma"] == report["kernel"]["b"]["sigma"]
    assert table.loc["b", "n_anchors"] == report["kernel"]["b"]["n_anchors"]
    assert report["order"] == ["a", "b"] and report["pairs"]["b"] > 0  # equal sizes: by name
    np.testing.assert_allclose(z[batches == "a"], z0[batches == "a"], atol=1e-6)  # stays
    assert not np.allclose(z[batches == "b"], z0[batches == "b"], atol=1e-3)  # moved


def test_harmony_correction_of_the_fine_tuned_embedding(integrated, two_batches):
    import harmonypy
    import pandas as pd
    from sklearn.decomposition import PCA

    _, model = integrated  # correction="harmony" asked for two batches (the model's)
    kw = {"batch_key": "batch", "model": model, "copy": True, "progress": False}
    known = two_batches()
    z0 = tl.integrate(known, correction=None, random_state=3, **kw).obsm["X_scgpt_integrated"]
    out = tl.integrate(known, correction="harmony", random_state=3, **kw)
    # Harmony as its authors' package runs it, on the top principal components written out
    batches = known.obs["batch"].astype(str).to_numpy()
    centred = z0.astype(np.float64) - z0.astype(np.float64).mean(0)
    n = min(50, z0.shape[1], len(z0) - 1)
    pcs = PCA(n_components=n, random_state=3).fit_transform(centred)
    ho = harmonypy.run_harmony(pcs, pd.DataFrame({"b": batches}), ["b"], theta=2.0, lamb=0.5,
                               max_iter_harmony=20, epsilon_harmony=1e-4, random_state=3,
                               verbose=False)  # fmt: skip
    got = out.obsm["X_scgpt_integrated"]
    assert got.shape == (known.n_obs, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(ho.Z_corr), atol=1e-4)
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["correction"] == "harmony"
    assert info["correction"]["method"] == "harmony" and info["correction"]["n_pcs"] == n
    assert (info["correction"]["theta"], info["correction"]["lamb"]) == (2.0, 0.5)
    # five starts and two rounds; on these few cells Harmony settles at once (one iteration
    # here), so every start and the second round give the one run above (the rounds
    # themselves: tests/_core/test_harmony.py)
    assert (info["correction"]["n_runs"], info["correction"]["n_rounds"]) == (5, 2)


@pytest.mark.parametrize(
    ("kwargs", "applied"),
    [({}, "harmony"), ({"mnn_weight": 30.0}, "mnn"), ({"dsbn": True}, None),
     ({"mnn_weight": 0.0}, "harmony"),
     ({"dsbn": True, "correction": "mnn"}, "mnn"), ({"correction": "harmony"}, "harmony"),
     ({"correction": None}, None)],
)  # fmt: skip
def test_correction_is_on_for_batches_that_share_cell_types(
    two_batch_pretrained, kwargs, applied, two_batches
):
    out = tl.integrate(two_batches(4), batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                       batch_size=8, copy=True, progress=False, **kwargs)  # fmt: skip
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["correction"] == applied
    assert (info["correction"] or {}).get("method") == applied


def test_more_than_two_batches_are_corrected_with_harmony(two_batch_pretrained, two_batches):
    out, model = tl.integrate(_three(two_batches), batch_key="batch", model=two_batch_pretrained,
                              copy=True, return_model=True, **QUICK)  # fmt: skip
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["correction"] == "harmony" and info["correction"]["method"] == "harmony"
    assert info["params"]["mnn_weight"] == 0.0  # no cross-batch loss: Harmony mixes them
    n = min(50, model.module.config.d_model, out.n_obs - 1)
    assert out.obsm["X_scgpt_integrated"].shape == (out.n_obs, n) == (72, 32)  # d_model 32
    assert info["correction"]["n_pcs"] == n


def _apart(two_batches) -> ad.AnnData:
    """``two_batches()`` with no gene in common between the batches: batch "a" keeps genes
    0-29, batch "b" genes 30-59 (batches that lie apart in any embedding)."""
    import scipy.sparse as sp

    adata = two_batches()
    X = adata.X.toarray()
    b = (adata.obs["batch"] == "b").to_numpy()
    X[~b, 30:] = 0
    X[b, :30] = 0
    X[X.sum(1) == 0, np.where(b[X.sum(1) == 0], 30, 0)] = 1
    adata.X = sp.csr_matrix(X)
    return adata


def _mixing_written_out(z: np.ndarray, batches: np.ndarray, k: int = 30) -> float:
    """Mean over cells of the share of its k nearest other cells (Euclidean) in the other
    batch, over the other batch's share of all cells."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)[1]
    shares = []
    for i, row in enumerate(idx):
        others = [j for j in row if j != i][:k]
        share = np.mean(batches[others] != batches[i])
        shares.append(share / np.mean(batches != batches[i]))
    return float(np.mean(shares))


def test_two_batches_get_the_cross_batch_loss_only_where_they_start_apart(
    two_batch_pretrained, two_batches, caplog
):
    """Two batches, default mnn_weight: the pretrained embedding's mixing of the batches
    (below 0.05: apart) chooses the cross-batch loss + MNN correction, else neither + Harmony."""
    for adata, weight, applied in ((_apart(two_batches), 30.0, "mnn"),
                                   (two_batches(), 0.0, "harmony")):  # fmt: skip
        zero_shot = tl.embed(adata, model=two_batch_pretrained, copy=True, progress=False)
        batches = adata.obs["batch"].astype(str).to_numpy()
        expected = _mixing_written_out(zero_shot.obsm["X_scgpt"], batches)
        assert (expected < 0.05) is (weight > 0)
        caplog.clear()
        with caplog.at_level("INFO", logger="omicformer.scgpt._integrate"):
            out = tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, copy=True,
                               max_epochs=1, batch_size=16, progress=False)  # fmt: skip
        side = "below" if weight else "at least"
        logged = re.search(r"mix (\d\.\d{3}) in the pretrained embedding \((.+?)\), so "
                           r"mnn_weight=(\d+)\.", caplog.text)  # fmt: skip
        assert logged is not None and logged[2] == f"{side} 0.05" and logged[3] == f"{weight:g}"
        assert float(logged[1]) == pytest.approx(expected, abs=2e-3)
        params = out.uns["scgpt"]["X_scgpt_integrated"]["params"]
        assert params["zero_shot_mixing"] == pytest.approx(expected, abs=1e-3)
        assert params["mnn_weight"] == weight and params["correction"] == applied


def test_measuring_the_zero_shot_mixing_does_not_warn_of_an_untrained_model(
    two_batch_pretrained, two_batches
):
    # the pretrained model embeds the two batches before fine-tuning by design; the warning
    # meant for users who embed with a model they forgot to train must not appear
    adata = two_batches()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                     batch_size=16, progress=False)  # fmt: skip
    assert adata.uns["scgpt"]["X_scgpt_integrated"]["params"]["zero_shot_mixing"] is not None
    assert not [str(w.message) for w in record if "not trained" in str(w.message)]


def test_mnn_weight_is_0_for_more_than_two_batches_unless_asked(
    two_batch_pretrained, runner_call, two_batches
):
    seen = runner_call
    for kwargs, weight in (({}, 0.0), ({"mnn_weight": 5.0}, 5.0)):  # asked for: kept
        with pytest.raises(RuntimeError, match="stop"):
            tl.integrate(_three(two_batches), batch_key="batch", model=two_batch_pretrained,
                         **kwargs, **QUICK)  # fmt: skip
        assert seen["plan"].mnn_weight == weight


@pytest.mark.parametrize(("old", "new"), [(True, "mnn"), (False, None), (None, "harmony")])
def test_mnn_correct_is_deprecated_for_correction(two_batch_pretrained, old, new, two_batches):
    with pytest.warns(FutureWarning, match="'mnn_correct' is deprecated.*'correction'"):
        out = tl.integrate(two_batches(4), batch_key="batch", model=two_batch_pretrained,
                           max_epochs=1, batch_size=8, copy=True, progress=False,
                           mnn_correct=old)  # fmt: skip
    assert out.uns["scgpt"]["X_scgpt_integrated"]["params"]["correction"] == new


def test_unknown_correction_is_refused_before_any_change(two_batch_pretrained, two_batches):
    adata = two_batches(4)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"correction='scvi' must be one of \['auto', 'mnn', "):
        tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, correction="scvi",
                     **QUICK)  # fmt: skip
    assert set(adata.obsm) == set(before.obsm) and set(adata.uns) == set(before.uns)
    assert set(adata.obs) == set(before.obs)


@pytest.mark.parametrize(
    ("dsbn", "mnn_weight", "one_batch"),
    [(False, 5.0, False), (False, 0.0, False), (True, 0.0, True), (True, 5.0, False)],
)
def test_minibatches_hold_one_batch_only_for_official_dsbn(
    two_batch_pretrained, runner_call, dsbn, mnn_weight, one_batch, two_batches
):
    seen = runner_call
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata, dsbn=dsbn)
    with pytest.raises(RuntimeError, match="stop"):
        model.train(max_epochs=1, mnn_weight=mnn_weight)
    # the official recipe (DSBN, no cross-batch loss) draws each minibatch from one batch; the
    # cross-batch loss needs minibatches that mix the batches, with DSBN too
    assert (seen["groups"] is not None) is one_batch and seen["plan"].mnn_weight == mnn_weight
    assert seen["balance_groups"] is False  # the model class draws random minibatches
    assert inspect.signature(ScGPTIntegration.train).parameters["mnn_weight"].default == 0.0


def test_default_run_stops_after_16000_cell_passes(two_batch_pretrained, runner_call, two_batches):
    seen = runner_call
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata)
    with pytest.raises(RuntimeError, match="stop"):
        model.train(batch_size=64)
    assert seen["max_epochs"] == 15 and seen["max_steps"] == 250
    with pytest.raises(RuntimeError, match="stop"):
        model.train(max_epochs=3)
    assert seen["max_epochs"] == 3 and seen["max_steps"] is None


def _unequal(two_batches) -> ad.AnnData:
    """36 cells of batch "a", 6 of batch "b" (2 per type)."""
    a = two_batches()
    keep = (a.obs["batch"] == "a").to_numpy() | (np.arange(a.n_obs) % 6 == 0)
    return a[keep].copy()


def _three(two_batches) -> ad.AnnData:
    """Three batches, 36 + 18 + 18 cells (not unequal: at most twice as many): every second
    cell of batch "b" becomes batch "c"."""
    a = two_batches()
    half = (a.obs["batch"] == "b").to_numpy() & (np.arange(a.n_obs) % 2 == 0)
    a.obs["batch"] = np.where(half, "c", a.obs["batch"].astype(str))
    assert a.obs["batch"].value_counts().to_dict() == {"a": 36, "b": 18, "c": 18}
    return a


def test_unequal_batches_get_balanced_minibatches(two_batch_pretrained, runner_call, two_batches):
    seen = runner_call
    cases = ((_unequal(two_batches), True), (two_batches(), False), (_three(two_batches), True))
    for adata, balanced in cases:
        with pytest.raises(RuntimeError, match="stop"):
            tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, **QUICK)
        assert seen["balance_groups"] is balanced
        assert (seen["groups"] is not None) is balanced  # batch codes, for the sampler
        assert seen["groups_per_batch"] == 2  # two batches per minibatch when balanced
    for kwargs in ({"balance_batches": False}, {"mnn_weight": 0.0, "dsbn": True}):
        with pytest.raises(RuntimeError, match="stop"):  # asked off; one batch per minibatch
            tl.integrate(
                _unequal(two_batches),
                batch_key="batch",
                model=two_batch_pretrained,
                **QUICK,
                **kwargs,
            )
        assert seen["balance_groups"] is False
    adata = _unequal(two_batches)
    before = adata.copy()
    with pytest.raises(ValueError, match="balance_batches=True needs minibatches that mix"):
        tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, balance_batches=True,
                     mnn_weight=0.0, dsbn=True, **QUICK)  # fmt: skip
    assert set(adata.obsm) == set(before.obsm) and set(adata.uns) == set(before.uns)
    adata = two_batches(2)
    ScGPTIntegration.setup_anndata(adata, batch_key="batch")
    model = ScGPTIntegration.load_pretrained(two_batch_pretrained, adata, dsbn=True)
    dropout = model.module.config.dropout
    with pytest.raises(ValueError, match="cannot be combined with DSBN at mnn_weight=0"):
        model.train(max_epochs=1, balance_batches=True, dropout=0.7)
    assert model.module.config.dropout == dropout  # refused before any change
    with pytest.raises(ValueError, match="batch_size=0 must be an integer"):
        model.train(batch_size=0, dropout=0.7)  # max_epochs=None: no ZeroDivisionError
    assert model.module.config.dropout == dropout


def test_balanced_minibatches_are_used_in_training(two_batch_pretrained, monkeypatch, two_batches):
    from omicformer._core import _samplers

    dealt = []
    original = _samplers.BalancedBatchSampler._all_batches

    def spy(self):
        batches = original(self)
        dealt.extend(np.bincount(self.groups[b], minlength=self.groups.max() + 1).tolist()
                     for b in batches)  # fmt: skip
        return batches

    monkeypatch.setattr(_samplers.BalancedBatchSampler, "_all_batches", spy)
    adata = _unequal(two_batches)
    tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, **QUICK)
    assert adata.uns["scgpt"]["X_scgpt_integrated"]["params"]["balance_batches"] is True
    assert dealt and all(counts == [8, 8] for counts in dealt)  # batch_size 16: 8 + 8
    dealt.clear()  # three batches: 8 + 8 of two of them in every minibatch, each pair in turn
    adata = _three(two_batches)
    tl.integrate(adata, batch_key="batch", model=two_batch_pretrained, **QUICK)
    assert adata.uns["scgpt"]["X_scgpt_integrated"]["params"]["balance_batches"] is True
    assert dealt and all(sorted(counts) == [0, 8, 8] for counts in dealt)
    assert {tuple(np.flatnonzero(c)) for c in dealt} == {(0, 1), (0, 2), (1, 2)}


def test_backed_file_storing_batches_in_runs_gets_balanced_minibatches(
    two_batch_pretrained, runner_call, two_batches, tmp_path
):
    from omicformer.scgpt.model._integration import streamed_minibatches_mix

    # random cells of 4 chunks of 1,024: a file of two batches one after the other in runs of
    # 3 chunks gives windows of one batch or 3:1; shuffled (or all in one window) they mix
    runs = np.repeat([0, 1], 3000)
    assert not streamed_minibatches_mix(runs, 64)
    assert streamed_minibatches_mix(np.random.default_rng(0).permutation(runs), 64)
    assert streamed_minibatches_mix(np.repeat([0, 1], 1000), 64)
    assert streamed_minibatches_mix(np.zeros(10, int), 64)  # one batch: nothing to mix
    in_runs = two_batches(1000)  # 3,000 cells of batch a, then 3,000 of b
    shuffled = in_runs[np.random.default_rng(0).permutation(in_runs.n_obs)].copy()
    for name, data, balanced in (("runs", in_runs, True), ("shuffled", shuffled, False)):
        data.write_h5ad(tmp_path / f"{name}.h5ad")
        backed = ad.read_h5ad(tmp_path / f"{name}.h5ad", backed="r")
        with pytest.raises(RuntimeError, match="stop"):
            tl.integrate(backed, batch_key="batch", model=two_batch_pretrained, **QUICK)
        assert runner_call["balance_groups"] is balanced, name
        backed.file.close()
    with pytest.raises(RuntimeError, match="stop"):  # in memory: random draws of all cells
        tl.integrate(in_runs, batch_key="batch", model=two_batch_pretrained, **QUICK)
    assert runner_call["balance_groups"] is False


def test_zero_shot_mixing_reads_a_subsample_of_large_batches_in_file_order(
    two_batch_pretrained, two_batches, tmp_path, monkeypatch
):
    import omicformer.scgpt._integrate as integrate_module

    monkeypatch.setattr(integrate_module, "MIXING_CELLS", 20)
    adata = two_batches(10)  # 30 cells per batch
    adata = adata[np.random.default_rng(0).permutation(adata.n_obs)].copy()  # interleaved
    adata.write_h5ad(tmp_path / "cells.h5ad")
    seen = []
    embed = ScGPTIntegration.get_latent_representation

    def recording(self, data=None, *args, **kwargs):
        seen.append(list(data.obs_names) if data is not None else None)
        return embed(self, data, *args, **kwargs)

    monkeypatch.setattr(ScGPTIntegration, "get_latent_representation", recording)
    kw = {"batch_key": "batch", "model": two_batch_pretrained, "max_epochs": 1,
          "progress": False}  # fmt: skip
    mixings = []
    for data in (adata, ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")):
        seen.clear()
        tl.integrate(data, **kw)
        names = seen[0]  # the first embedding pass: the pretrained model's, before training
        assert len(names) == 40 and len(set(names)) == 40
        position = adata.obs_names.get_indexer(names)
        assert (np.diff(position) > 0).all()  # in file order
        assert adata.obs["batch"].iloc[position].value_counts().to_dict() == {"a": 20, "b": 20}
        mixings.append(data.uns["scgpt"]["X_scgpt_integrated"]["params"]["zero_shot_mixing"])
        if data.isbacked:
            data.file.close()
    assert mixings[0] == pytest.approx(mixings[1])  # backed or in memory, the same cells


@pytest.mark.parametrize("suffix", [".h5ad", pytest.param(".zarr", marks=pytest.mark.zarr)])
def test_the_mnn_report_survives_files_whatever_the_batch_names(
    two_batch_pretrained, two_batches, tmp_path, suffix
):
    # batch names were keys of uns: "donorB/10x v2" came back nested from .h5ad (with a
    # FutureWarning), and .zarr refused it
    a = two_batches()
    a.obs["batch"] = a.obs["batch"].map({"a": "donorA/10x v3", "b": "donorB/10x v2"})
    tl.integrate(a, batch_key="batch", model=two_batch_pretrained, correction="mnn", **QUICK)
    table = a.uns["scgpt"]["X_scgpt_integrated"]["correction"]["merged"]
    assert list(table.index) == ["donorB/10x v2"]
    zarr = suffix == ".zarr"
    write, read = (a.write_zarr, ad.read_zarr) if zarr else (a.write_h5ad, ad.read_h5ad)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings("ignore", "Writing zarr v2", UserWarning)  # anndata's notice
        write(tmp_path / f"a{suffix}")
    correction = read(tmp_path / f"a{suffix}").uns["scgpt"]["X_scgpt_integrated"]["correction"]
    assert list(correction["order"]) == ["donorA/10x v3", "donorB/10x v2"]
    assert list(correction["merged"].index) == ["donorB/10x v2"]
    assert correction["merged"].loc["donorB/10x v2", "pairs"] == table.iloc[0]["pairs"]
