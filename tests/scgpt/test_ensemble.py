"""ScGPTClassifierEnsemble and ``tl.annotate(n_models=...)``."""

import anndata as ad
import numpy as np
import pytest
import torch

from omicformer.scgpt import tl
from omicformer.scgpt.model import ScGPTClassifier, ScGPTClassifierEnsemble
from omicformer.scgpt.model._probe_smooth import smooth_far_cells

FIT = {"accelerator": "cpu", "enable_progress_bar": False, "max_epochs": 2, "lr": 3e-3,
       "batch_size": 16}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ensemble(marker_pretrained, marker_ref) -> ScGPTClassifierEnsemble:
    ens = ScGPTClassifierEnsemble.load_pretrained(marker_pretrained, marker_ref, n_models=2)
    with torch.random.fork_rng():
        ens.train(random_state=3, **FIT)
    return ens


@pytest.fixture(scope="module")
def query(marker_cells) -> ad.AnnData:
    """Cells like the reference's and cells far from all of them (smoothing acts on those)."""
    return ad.concat([marker_cells(5, seed=4, shift=True), marker_cells(5, seed=5)])


def test_member_i_is_a_classifier_trained_with_seed_plus_100_i(
    ensemble, marker_pretrained, marker_ref
):
    assert ensemble.n_models == 2 and ensemble.is_trained_ and ensemble.random_state_ == 3
    alone = ScGPTClassifier.load_pretrained(marker_pretrained, marker_ref)
    with torch.random.fork_rng():
        alone.train(random_state=103, **FIT)
    second = ensemble.members[1].module.state_dict()
    for key, value in alone.module.state_dict().items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(np.sort(ensemble.members[1].validation_indices),
                                  np.sort(alone.validation_indices))  # fmt: skip
    # the two members hold out different cells
    assert set(ensemble.members[0].validation_indices) != set(alone.validation_indices)


def test_prediction_is_the_members_mean_then_one_smoothing(ensemble, query):
    a, b = ensemble.members
    # each cell on its own: the mean of the members' own predictions with their own seeds
    got = ensemble.predict_proba(query, progress=False, smooth_neighbors=1, random_state=7)
    mean = (
        a.predict_proba(query, progress=False, smooth_neighbors=1, random_state=7)
        + b.predict_proba(query, progress=False, smooth_neighbors=1, random_state=107)
    ) / 2
    np.testing.assert_allclose(got.to_numpy(), mean.to_numpy(), rtol=1e-12, atol=1e-12)
    assert list(got.columns) == a.classes_ and list(got.index) == list(query.obs_names)
    # smoothing acts once, on the mean of the mixed and probe probabilities, weights and bags
    parts = [m._parts(query, rows=None, random_state=s, progress=False)
             for m, s in ((a, 7), (b, 107))]  # fmt: skip
    far = np.mean([x.w for x in parts], axis=0).ravel() < 1
    assert far.any() and not far.all()
    pm, pp, w, z = (np.mean([x[i] for x in parts], axis=0) for i in range(4))
    expected = smooth_far_cells(pm, pp, w, z, 4)
    got = ensemble.predict_proba(query, progress=False, smooth_neighbors=4, random_state=7)
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(expected[far], pm[far])  # the far cells moved, the others did not
    np.testing.assert_allclose(expected[~far], pm[~far])
    pred = ensemble.predict(query, progress=False, smooth_neighbors=4, random_state=7)
    assert list(pred) == list(got.columns[got.to_numpy().argmax(1)])


def test_validation_scores_are_the_members_mean(ensemble):
    scores = ensemble.validation_scores_
    for key in ("accuracy", "macro_f1"):
        each = [m.validation_scores_[key] for m in ensemble.members]
        assert scores[key] == pytest.approx(sum(each) / 2)
    assert scores["member_1"] == ensemble.members[1].validation_scores_


def test_save_load_round_trip(ensemble, query, tmp_path):
    ensemble.save(tmp_path / "ens")
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == [
        "ensemble.json", "member_0", "member_1"
    ]  # fmt: skip
    loaded = ScGPTClassifierEnsemble.load(tmp_path / "ens")
    assert loaded.n_models == 2 and loaded.classes_ == ensemble.classes_
    assert loaded.random_state_ == 3
    kw = {"progress": False, "smooth_neighbors": 4}
    np.testing.assert_array_equal(loaded.predict_proba(query, **kw).to_numpy(),
                                  ensemble.predict_proba(query, **kw).to_numpy())  # fmt: skip
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ensemble.save(tmp_path / "ens")
    # overwritten by a smaller ensemble: the third member's folder does not linger
    three = ScGPTClassifierEnsemble([*ensemble.members, ensemble.members[0]])
    three.save(tmp_path / "ens", overwrite=True)
    ScGPTClassifierEnsemble(ensemble.members[:1]).save(tmp_path / "ens", overwrite=True)
    assert not (tmp_path / "ens" / "member_1").exists()
    assert ScGPTClassifierEnsemble.load(tmp_path / "ens").n_models == 1
    with pytest.raises(FileNotFoundError, match=r"ScGPTClassifier\.load"):
        ScGPTClassifierEnsemble.load(tmp_path / "ens" / "member_0")
    with pytest.raises(ValueError, match="member_0"):  # not one model: say which folder is
        tl.embed(query.copy(), model=tmp_path / "ens")


def test_bad_members_and_arguments(ensemble, marker_pretrained, marker_cells, tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        ScGPTClassifierEnsemble([])
    with pytest.raises(TypeError, match="ScGPTClassifier models, not ScGPT"):
        ScGPTClassifierEnsemble([marker_pretrained])
    two = marker_cells(10, seed=2)
    two = two[two.obs["cell_type"] != "B"].copy()
    ScGPTClassifier.setup_anndata(two, labels_key="cell_type")
    other = ScGPTClassifier.load_pretrained(marker_pretrained, two)
    with pytest.raises(ValueError, match=r"member 1 predicts the classes \['Mono', 'T'\]"):
        ScGPTClassifierEnsemble([ensemble.members[0], other])
    with pytest.raises(ValueError, match="n_models=0 must be an integer >= 1"):
        ScGPTClassifierEnsemble.load_pretrained(marker_pretrained, two, n_models=0)
    with pytest.raises(ValueError, match=r"members\[i\]\.train\(ckpt_path"):
        ensemble.train(ckpt_path=tmp_path / "last.ckpt")
    # scvi-tools' predict(soft=True) / predict(indices=...): what to call instead (both the
    # ensemble and a classifier; the TypeError named predict_proba's keyword before)
    for model in (ensemble, ensemble.members[0]):
        name = type(model).__name__
        with pytest.raises(
            TypeError, match=rf"^{name}\.predict\(\) takes no soft= .*predict_proba"
        ):
            model.predict(soft=True)
        with pytest.raises(TypeError, match=r"no indices= .*adata\[indices\]"):
            model.predict(indices=[0, 1])


def test_annotate_trains_two_members_when_asked_and_reuses_an_ensemble(
    marker_pretrained, marker_ref, query, tmp_path
):
    q = query.copy()
    ens = tl.annotate(q, marker_ref, label_key="cell_type", model=marker_pretrained, max_epochs=2,
                      random_state=5, n_models=2, progress=False, return_model=True)  # fmt: skip
    assert isinstance(ens, ScGPTClassifierEnsemble) and ens.n_models == 2
    assert ens.random_state_ == 5
    uns = q.uns["scgpt"]["scgpt_cell_type"]
    assert uns["params"]["n_models"] == 2 and uns["params"]["probe"] is True
    assert uns["validation"]["macro_f1"] == ens.validation_scores_["macro_f1"]
    expected = ens.predict_proba(query, progress=False, random_state=5)
    np.testing.assert_allclose(q.obs["scgpt_cell_type_confidence"], expected.max(1))
    assert list(q.obs["scgpt_cell_type"].astype(str)) == list(expected.idxmax(1))
    q.write_h5ad(tmp_path / "q.h5ad")  # the nested validation scores can be written

    # a trained ensemble (or its folder) labels as it is; n_models is then its own
    for model in (ens, tmp_path / "saved"):
        if model is not ens:
            ens.save(model)
        q2 = query.copy()
        tl.annotate(q2, marker_ref, label_key="cell_type", model=model, n_models=1, random_state=5,
                    progress=False)  # fmt: skip
        assert q2.uns["scgpt"]["scgpt_cell_type"]["params"]["n_models"] == 2
        np.testing.assert_allclose(q2.obs["scgpt_cell_type_confidence"], expected.max(1))

    # one classifier on request; its folder labels as it is too (no second fine-tuning)
    q1 = query.copy()
    clf = tl.annotate(q1, marker_ref, label_key="cell_type", model=marker_pretrained,
                      max_epochs=1, n_models=1, progress=False, return_model=True)  # fmt: skip
    assert isinstance(clf, ScGPTClassifier)
    clf.save(tmp_path / "one")
    q2 = query.copy()
    again = tl.annotate(q2, marker_ref, label_key="cell_type", model=tmp_path / "one",
                        progress=False, return_model=True)  # fmt: skip
    assert isinstance(again, ScGPTClassifier) and again is not clf
    assert q2.uns["scgpt"]["scgpt_cell_type"]["params"]["n_models"] == 1
    np.testing.assert_array_equal(q2.obs["scgpt_cell_type_confidence"],
                                  q1.obs["scgpt_cell_type_confidence"])  # fmt: skip


def test_annotate_refuses_a_bad_n_models_or_an_ensemble_of_other_classes(
    ensemble, marker_cells, query
):
    q = query.copy()
    before = q.obs.copy()
    for bad in (0, 1.5, "2"):
        with pytest.raises(ValueError, match=r"n_models=.* must be an integer >= 1"):
            tl.annotate(q, ensemble.adata, label_key="cell_type", n_models=bad, progress=False)
    two = marker_cells(10, seed=2)
    two = two[two.obs["cell_type"] != "B"].copy()
    with pytest.raises(ValueError, match="ensemble labels cells as it is trained"):
        tl.annotate(q, two, label_key="cell_type", model=ensemble, progress=False)
    assert q.obs.equals(before) and "scgpt" not in q.uns


def test_no_cells_predict_an_empty_result(ensemble, query):
    proba = ensemble.predict_proba(query[:0], progress=False)
    assert proba.shape == (0, 3) and list(proba.columns) == ["B", "Mono", "T"]
    assert len(ensemble.predict(query[:0], progress=False)) == 0


def test_an_untrained_ensemble_refuses_to_predict(marker_pretrained, marker_cells, query):
    ref = marker_cells(4, seed=0)
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    fresh = ScGPTClassifierEnsemble.load_pretrained(marker_pretrained, ref, n_models=2)
    with pytest.raises(RuntimeError, match=r"not trained.*ScGPTClassifierEnsemble\.train\(\)"):
        fresh.predict(query, progress=False)


def test_members_tell_their_bar_and_a_long_run_warning_which_training_they_are(
    marker_pretrained, marker_cells, monkeypatch
):
    """Member i of 3 trains while RUNS_AFTER is 2 - i, its bar named "classifier i+1/3"; both
    are back to their defaults afterwards."""
    from omicformer._core import _callbacks, _progress

    ref = marker_cells(4, seed=0)
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    ens = ScGPTClassifierEnsemble.load_pretrained(marker_pretrained, ref, n_models=3)
    seen = []
    monkeypatch.setattr(ScGPTClassifier, "train", lambda self, **kw: seen.append(
        (_callbacks.RUNS_AFTER.get(), _progress.RUN_LABEL.get())))  # fmt: skip
    ens.train(random_state=0)
    assert seen == [(2, "classifier 1/3"), (1, "classifier 2/3"), (0, "classifier 3/3")]
    assert _callbacks.RUNS_AFTER.get() == 0 and _progress.RUN_LABEL.get() == ""


def test_a_classifier_and_an_ensemble_saved_over_each_other(ensemble, query, tmp_path):
    # a classifier saved over an ensemble's folder, even with overwrite=True, left
    # ensemble.json there, so the folder still loaded (tl.annotate(model=folder)) as the ensemble
    member = ensemble.members[0]
    ensemble.save(tmp_path / "f")
    with pytest.raises(FileExistsError, match="already holds a saved ensemble; pass overwrite"):
        member.save(tmp_path / "f")
    member.save(tmp_path / "f", overwrite=True)
    assert not (tmp_path / "f" / "ensemble.json").exists()
    assert not (tmp_path / "f" / "member_0").exists()
    kw = {"progress": False, "smooth_neighbors": 4}
    np.testing.assert_array_equal(ScGPTClassifier.load(tmp_path / "f").predict_proba(query, **kw),
                                  member.predict_proba(query, **kw))  # fmt: skip
    with pytest.raises(FileExistsError, match="already holds a saved model; pass overwrite"):
        ensemble.save(tmp_path / "f")
    ensemble.save(tmp_path / "f", overwrite=True)
    assert not (tmp_path / "f" / "model.safetensors").exists()  # the classifier's files went
    assert ScGPTClassifierEnsemble.load(tmp_path / "f").n_models == ensemble.n_models
    (tmp_path / "f" / "ensemble.json").write_text("{")  # damaged: overwrite still replaces it
    member.save(tmp_path / "f", overwrite=True)
    assert not (tmp_path / "f" / "ensemble.json").exists()
    (tmp_path / "afile").write_text("")
    for model in (member, ensemble):  # bare FileExistsError / NotADirectoryError before
        with pytest.raises(FileExistsError, match="is a file; a model is saved as a folder"):
            model.save(tmp_path / "afile", overwrite=True)


def test_an_interrupted_save_over_an_ensemble_keeps_the_old_one_whole(
    ensemble, query, tmp_path, weights_write_fails
):
    # members were saved one by one in place: Ctrl-C after the first left a folder that
    # loaded, silently, as a mix of the new ensemble's member_0 and the old one's member_1
    ensemble.save(tmp_path / "f")
    swapped = ScGPTClassifierEnsemble(ensemble.members[::-1])
    weights_write_fails("member_1", KeyboardInterrupt())
    try:
        swapped.save(tmp_path / "f", overwrite=True)
    except BaseException as err:  # a KeyboardInterrupt must not end pytest
        caught = err
    assert isinstance(caught, KeyboardInterrupt)
    loaded = ScGPTClassifierEnsemble.load(tmp_path / "f")
    for old, new in zip(ensemble.members, loaded.members, strict=True):
        for key, value in old.module.state_dict().items():
            torch.testing.assert_close(new.module.state_dict()[key], value, rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["ensemble.json", "member_0",
                                                                  "member_1"]  # fmt: skip
