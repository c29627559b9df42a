"""scgpt.tl.integrate: how the batches meet (minibatches, balancing, the MNN correction)."""

import inspect

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
    assert info["params"]["mnn_correct"] is False and info["mnn_correction"] is None
    kw = {"batch_key": "batch", "model": model, "copy": True, "progress": False}
    plain = tl.integrate(two_batches(), **kw)  # the trained model again: no retraining
    z0 = plain.obsm["X_scgpt_integrated"]
    np.testing.assert_allclose(z0, adata.obsm["X_scgpt_integrated"], atol=1e-5)
    out = tl.integrate(two_batches(), mnn_correct=True, **kw)
    batches = out.obs["batch"].astype(str).to_numpy()
    expected, report = mnn_correct(z0, batches, random_state=0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    z = out.obsm["X_scgpt_integrated"]
    np.testing.assert_allclose(z, expected, atol=1e-5)
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["mnn_correct"] is True and info["mnn_correction"] == report
    assert report["order"] == ["a", "b"] and report["pairs"]["b"] > 0  # equal sizes: by name
    np.testing.assert_allclose(z[batches == "a"], z0[batches == "a"], atol=1e-6)  # stays
    assert not np.allclose(z[batches == "b"], z0[batches == "b"], atol=1e-3)  # moved


@pytest.mark.parametrize(
    ("kwargs", "on"),
    [({}, True), ({"dsbn": True}, False), ({"mnn_weight": 0.0}, False),
     ({"dsbn": True, "mnn_correct": True}, True)],
)  # fmt: skip
def test_mnn_correction_is_on_for_batches_that_share_cell_types(
    two_batch_pretrained, kwargs, on, two_batches
):
    out = tl.integrate(two_batches(4), batch_key="batch", model=two_batch_pretrained, max_epochs=1,
                       batch_size=8, copy=True, progress=False, **kwargs)  # fmt: skip
    info = out.uns["scgpt"]["X_scgpt_integrated"]
    assert info["params"]["mnn_correct"] is on and (info["mnn_correction"] is not None) is on


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
    with pytest.raises(ValueError, match="cannot be combined with DSBN at mnn_weight=0"):
        model.train(max_epochs=1, balance_batches=True)


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
