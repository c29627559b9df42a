"""The reference probe of ScGPTClassifier (``train(probe=True)``)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from omicformer.scgpt.model import ScGPT, ScGPTClassifier
from omicformer.scgpt.model._classifier_probe import PROBE_NAME, probe_weight

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "enable_progress_bar": False, "max_epochs": 3, "lr": 3e-3,
       "batch_size": 16, "random_state": 0}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def _cells(n_per_type: int, seed: int, shift: bool = False) -> ad.AnnData:
    """Three types with 20 marker genes each; ``shift``: cells unlike any of them, which
    express only genes 50-59 (far from every reference cell in the embedding)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for t, name in enumerate(TYPES):
        lam = np.full(N_GENES, 0.6)
        lam[20 * t : 20 * (t + 1)] = 5.0
        if shift:
            lam[:] = 0.0
            lam[50:] = 20.0
        rows.append(rng.poisson(lam, size=(n_per_type, N_GENES)))
        labels += [name] * n_per_type
    X = np.vstack(rows).astype(np.float32)
    X[X.sum(1) == 0, -1] = 1
    obs = pd.DataFrame({"cell_type": labels}, index=[f"s{seed}c{i}" for i in range(len(labels))])
    return ad.AnnData(
        sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)])
    )


@pytest.fixture(scope="module")
def pretrained() -> ScGPT:
    a = _cells(4, seed=9)
    ScGPT.setup_anndata(a)
    return ScGPT(a, d_model=32, n_layers=1, n_heads=2, dropout=0.0, random_state=0)


@pytest.fixture(scope="module")
def ref() -> ad.AnnData:
    a = _cells(30, seed=0)
    ScGPTClassifier.setup_anndata(a, labels_key="cell_type")
    return a


@pytest.fixture(scope="module")
def pair(pretrained, ref):
    """The same fine-tuning with and without the probe."""
    out = {}
    for probe in (True, False):
        clf = ScGPTClassifier.load_pretrained(pretrained, ref)
        with torch.random.fork_rng():
            clf.train(probe=probe, **FIT)
        out[probe] = clf
    return out


def test_probe_weight_is_the_conformal_p_value_over_alpha():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    # p = (1 + #{ref >= d}) / 5: d=0 -> 1, d=2.5 -> 3/5, d=3.5 -> 2/5, d=10 -> 1/5
    w = probe_weight(np.array([0.0, 2.5, 3.5, 10.0]), ref, alpha=0.5)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.8, 0.4])
    np.testing.assert_allclose(probe_weight(np.array([10.0]), ref, alpha=0.05), [1.0])  # 0.2/0.05


def test_probe_leaves_fine_tuning_alone_and_freezes_the_pretrained_encoder(pair, pretrained):
    with_probe, without = pair[True], pair[False]
    assert without.probe_ is None and without.probe_module_ is None
    for k, v in without.module.state_dict().items():
        torch.testing.assert_close(with_probe.module.state_dict()[k], v, rtol=0, atol=0)
    frozen = with_probe.probe_module_.state_dict()
    for k, v in pretrained.module.state_dict().items():
        if not k.startswith("cls_decoder."):  # the classifier's new head is not the probe's
            torch.testing.assert_close(frozen[k], v, rtol=0, atol=0)
    assert not any(p.requires_grad for p in with_probe.probe_module_.parameters())


def _pretrained_embedding(pretrained, ref, clf):
    """The embedding the probe reads, computed by a fresh (not fine-tuned) classifier."""
    fresh = ScGPTClassifier.load_pretrained(pretrained, ref)
    fresh.module.config = clf.module.config.__class__(
        **{**clf.module.config.to_dict(), "n_cls": fresh.module.config.n_cls}
    )
    return lambda a, rows=None: fresh._embeddings(a, rows=rows, progress=False).astype(float)


def _regression(emb_fn, ref, clf, rows):
    emb = emb_fn(ref, rows)
    mean, scale = emb.mean(0), np.sqrt(emb.var(0).mean() + 1e-5)
    codes = pd.Categorical(ref.obs["cell_type"], categories=clf.classes_).codes
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    return lr.fit((emb - mean) / scale, codes[rows]), mean, scale, codes


def test_probe_is_a_logistic_regression_on_the_pretrained_embedding(pair, pretrained, ref):
    clf = pair[True]  # the final regression learns from every labelled reference cell
    train = np.union1d(clf.train_indices, clf.validation_indices)
    assert len(train) == ref.n_obs
    emb_fn = _pretrained_embedding(pretrained, ref, clf)
    lr, mean, scale, _ = _regression(emb_fn, ref, clf, train)
    query = _cells(5, seed=3)
    q = (emb_fn(query) - mean) / scale
    z = clf._probe_features(query, rows=None, progress=False)
    np.testing.assert_allclose(z, q, atol=1e-6)
    logits = z @ clf.probe_["coef"].T + clf.probe_["intercept"]
    np.testing.assert_allclose(logits, lr.decision_function(q), rtol=1e-4, atol=1e-4)


def test_probe_temperature_minimises_the_validation_loss_of_the_training_cells_regression(
    pair, pretrained, ref
):
    clf = pair[True]
    train, val = np.sort(clf.train_indices), np.sort(clf.validation_indices)
    emb_fn = _pretrained_embedding(pretrained, ref, clf)
    lr, mean, scale, codes = _regression(emb_fn, ref, clf, train)
    logits = lr.decision_function((emb_fn(ref, val) - mean) / scale)

    def nll(t):
        p = _softmax(logits / t)
        return -np.log(p[np.arange(len(val)), codes[val]]).mean()

    t = clf.probe_["temperature"]  # searched over [0.05, 20] (these cells separate: small t)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    assert t != 1.0 and nll(t) <= min(nll(g) for g in grid) + 1e-9


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_query_cells_mix_probe_and_head_by_their_distance_to_the_reference(pair):
    from sklearn.neighbors import NearestNeighbors

    clf = pair[True]
    ref_z = clf.probe_["reference"].astype(np.float64)
    n = len(ref_z)
    own = NearestNeighbors(n_neighbors=16).fit(ref_z).kneighbors(ref_z)[0][:, 1:].mean(1)
    for cells, expect in ((_cells(5, seed=4, shift=True), "far"), (_cells(5, seed=5), "near")):
        z = clf._probe_features(cells, rows=None, progress=False)
        d = NearestNeighbors(n_neighbors=15).fit(ref_z).kneighbors(z)[0].mean(1)
        p = (1 + (own[None, :] >= d[:, None]).sum(1)) / (n + 1)
        w = np.minimum(1, p / 0.05)[:, None]
        if expect == "far":  # beyond every reference cell: the smallest p-value
            np.testing.assert_allclose(w, 20 / (n + 1))
        else:
            assert (w == 1).mean() >= 0.8
        p_probe = _softmax((z @ clf.probe_["coef"].T + clf.probe_["intercept"])
                           / clf.probe_["temperature"])  # fmt: skip
        p_head = _softmax(clf._logits(cells, progress=False) / clf.temperature_)
        got = clf.predict_proba(cells, progress=False).to_numpy()
        np.testing.assert_allclose(got, w * p_probe + (1 - w) * p_head, atol=1e-6)


def test_probe_save_load_round_trip(pair, tmp_path):
    clf = pair[True]
    query = _cells(5, seed=6)
    clf.save(tmp_path / "clf")
    assert (tmp_path / "clf" / PROBE_NAME).exists()
    loaded = ScGPTClassifier.load(tmp_path / "clf")
    pd.testing.assert_frame_equal(
        loaded.predict_proba(query, progress=False), clf.predict_proba(query, progress=False)
    )
    pair[False].save(tmp_path / "clf", overwrite=True)  # no probe: the old one must go
    assert not (tmp_path / "clf" / PROBE_NAME).exists()
    assert ScGPTClassifier.load(tmp_path / "clf").probe_ is None


def test_annotate_probe_argument_reaches_training(pretrained, ref):
    from omicformer.scgpt import tl

    query = _cells(5, seed=3)
    for probe in (True, False):
        q = query.copy()
        clf = tl.annotate(q, ref, label_key="cell_type", model=pretrained, max_epochs=1,
                          probe=probe, progress=False, return_model=True)  # fmt: skip
        assert (clf.probe_ is not None) is probe
        assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["probe"] is probe
    # a trained classifier is used as it is: the record says what labelled the cells
    q = query.copy()
    tl.annotate(q, ref, label_key="cell_type", model=clf, probe=True, progress=False)
    assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["probe"] is False
