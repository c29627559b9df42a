"""The reference probe of ScGPTClassifier (``train(probe=True)``)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from omicformer.scgpt.model import ScGPTClassifier
from omicformer.scgpt.model._classifier_probe import (
    PROBE_C,
    PROBE_NAME,
    choose_c,
    gene_bag,
    probe_weight,
)
from omicformer.scgpt.model._probe_smooth import SMOOTH_NEIGHBORS

N_GENES = 60
TYPES = ["T", "B", "Mono"]
FIT = {"accelerator": "cpu", "enable_progress_bar": False, "max_epochs": 3, "lr": 3e-3,
       "batch_size": 16, "random_state": 0}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(marker_pretrained, marker_ref):
    """The same fine-tuning with and without the probe."""
    out = {}
    for probe in (True, False):
        clf = ScGPTClassifier.load_pretrained(marker_pretrained, marker_ref)
        with torch.random.fork_rng():
            clf.train(probe=probe, **FIT)
        out[probe] = clf
    return out


def test_probe_weight_is_the_conformal_p_value_over_alpha():
    marker_ref = np.array([1.0, 2.0, 3.0, 4.0])
    # p = (1 + #{marker_ref >= d}) / 5: d=0 -> 1, d=2.5 -> 3/5, d=3.5 -> 2/5, d=10 -> 1/5
    w = probe_weight(np.array([0.0, 2.5, 3.5, 10.0]), marker_ref, alpha=0.5)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.8, 0.4])
    np.testing.assert_allclose(
        probe_weight(np.array([10.0]), marker_ref, alpha=0.05), [1.0]
    )  # 0.2/0.05


def test_probe_leaves_fine_tuning_alone_and_keeps_the_pretrained_gene_embeddings(
    pair, marker_pretrained, marker_ref
):
    with_probe, without = pair[True], pair[False]
    assert without.probe_ is None and without.probe_genes_ is None
    for k, v in without.module.state_dict().items():
        torch.testing.assert_close(with_probe.module.state_dict()[k], v, rtol=0, atol=0)
    kept = with_probe.probe_genes_
    genes = np.sort(
        marker_pretrained.vocab.lookup(marker_ref.var_names)
    )  # every gene of marker_ref is in the vocab
    np.testing.assert_array_equal(kept["genes"], genes)
    table = marker_pretrained.module.encoder.embedding.weight.detach().double().numpy()[genes]
    np.testing.assert_array_equal(kept["table"], table)
    tuned = with_probe.module.encoder.embedding.weight.detach().double().numpy()[genes]
    assert not np.allclose(tuned, table)  # fine-tuning moved them; the probe kept the old ones


def test_gene_bag_by_hand():
    table = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    genes = np.array([5, 7, 9, 11])  # vocabulary ids of the table's rows
    X = sp.csr_matrix(np.array([
        [1.0, 3.0, 4.0, 0.0, 8.0],  # column 2 is not in the vocabulary, column 4 not kept
        [0.0, 0.0, 2.0, 0.0, 1.0],  # none of the kept genes: zeros
        [1.0, 2.0, 0.0, 3.0, 0.0],
        [1.0, 1.0, 0.0, 5.0, 1.0],  # two tied values kept
    ]))  # fmt: skip
    gene_ids = np.array([5, 7, -1, 9, 13])
    raw = gene_bag(X, gene_ids, genes, table, n_bins=None)
    np.testing.assert_allclose(raw[:3], [[1 / 4, 3 / 4], [0, 0], [(1 + 3) / 6, (2 + 3) / 6]])
    # 51 official bins: edges np.quantile([1, 2, 3], linspace(0, 1, 50)); 1 -> 1, 2 -> 25
    # (between the edges 1.98 and 2.02), 3 -> 50 (the last edge); no ties to draw
    binned = gene_bag(X, gene_ids, genes, table, n_bins=51)
    np.testing.assert_allclose(binned[2], [(1 + 50) / 76, (25 + 50) / 76])
    # the first cell's two values are the smallest and the largest: bins 1 and 50
    np.testing.assert_allclose(binned[0], [1 / 51, 50 / 51])
    # the last cell's kept values 1, 1, 5: edges np.quantile([1, 1, 5], linspace(0, 1, 50)), the
    # first 25 of them 1, so a 1 may take any bin from 1 to 25 (the model draws one); the bag
    # weighs it 13, the middle; 5 -> 50
    np.testing.assert_allclose(binned[3], [(13 + 50) / 76, (13 + 50) / 76])


def _bag_by_hand(marker_pretrained, ref_genes):
    """The probe representation written out: official 51-bin quantile binning of each cell's
    non-zero values (its values never tie), then the bin-weighted mean of the marker_pretrained gene
    embeddings of the reference's genes."""
    vocab = marker_pretrained.vocab
    table = marker_pretrained.module.encoder.embedding.weight.detach().double().numpy()

    def bag(a, rows=None):
        a = a if rows is None else a[rows]
        X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
        ids = vocab.lookup(a.var_names)
        keep = np.isin(ids, ref_genes)
        out = np.zeros((a.n_obs, table.shape[1]))
        for i, x in enumerate(X[:, keep]):
            nz = np.flatnonzero(x)
            if nz.size:
                b = np.digitize(x[nz], np.quantile(x[nz], np.linspace(0, 1, 50)))
                out[i] = b @ table[ids[keep][nz]] / b.sum()
        return out

    return bag


def _regression(emb_fn, marker_ref, clf, rows):
    emb = emb_fn(marker_ref, rows)
    mean, scale = emb.mean(0), np.sqrt(emb.var(0).mean() + 1e-5)
    codes = pd.Categorical(marker_ref.obs["cell_type"], categories=clf.classes_).codes
    lr = LogisticRegression(C=clf.probe_["C"], class_weight="balanced", max_iter=5000)
    return lr.fit((emb - mean) / scale, codes[rows]), mean, scale, codes


def _cv_loss_by_hand(z, y, cs, seed):
    """Summed held-out -log p(true label) per C, stratified folds as many as the rarest class
    has cells (at most 5)."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(5, np.bincount(y)[np.bincount(y) > 0].min())
    loss = dict.fromkeys(cs, 0.0)
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(z, y):
        for c in cs:
            lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(z[tr], y[tr])
            p = lr.predict_proba(z[te])
            loss[c] -= sum(np.log(p[i, list(lr.classes_).index(t)]) for i, t in enumerate(y[te]))
    return loss


def test_probe_c_is_chosen_by_cross_validation_on_the_training_cells(
    pair, marker_pretrained, marker_ref
):
    clf = pair[True]
    train = np.sort(clf.train_indices)
    emb = _bag_by_hand(marker_pretrained, marker_pretrained.vocab.lookup(marker_ref.var_names))(
        marker_ref, train
    )
    z = (emb - emb.mean(0)) / np.sqrt(emb.var(0).mean() + 1e-5)
    codes = pd.Categorical(marker_ref.obs["cell_type"], categories=clf.classes_).codes[train]
    loss = _cv_loss_by_hand(z, codes, (0.1, 0.3, 1.0, 3.0, 10.0), seed=FIT["random_state"])
    assert clf.probe_["C"] == min(loss, key=loss.get)


def test_choose_c_without_two_cells_per_class_keeps_the_default():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3))
    assert choose_c(z, np.array([0, 0, 0, 1, 1, 1, 2]), "balanced", 0) == PROBE_C
    assert choose_c(z, np.zeros(7, dtype=int), "balanced", 0) == PROBE_C
    # noisy labels: the held-out loss prefers the strongest regularisation of the grid
    z = rng.normal(size=(60, 20))
    y = rng.integers(0, 2, size=60)
    loss = _cv_loss_by_hand(z, y, (0.1, 0.3, 1.0, 3.0, 10.0), seed=0)
    assert choose_c(z, y, "balanced", 0) == min(loss, key=loss.get) == 0.1


def test_probe_is_a_logistic_regression_on_the_bag_of_pretrained_gene_embeddings(
    marker_cells, pair, marker_pretrained, marker_ref
):
    clf = pair[True]  # the final regression learns from every labelled reference cell
    train = np.union1d(clf.train_indices, clf.validation_indices)
    assert len(train) == marker_ref.n_obs
    emb_fn = _bag_by_hand(marker_pretrained, marker_pretrained.vocab.lookup(marker_ref.var_names))
    lr, mean, scale, _ = _regression(emb_fn, marker_ref, clf, train)
    query = marker_cells(5, seed=3)
    q = (emb_fn(query) - mean) / scale
    z = clf._probe_features(query, rows=None, progress=False)
    np.testing.assert_allclose(z, q, atol=1e-6)
    logits = z @ clf.probe_["coef"].T + clf.probe_["intercept"]
    np.testing.assert_allclose(logits, lr.decision_function(q), rtol=1e-4, atol=1e-4)


def test_probe_temperature_minimises_the_validation_loss_of_the_training_cells_regression(
    pair, marker_pretrained, marker_ref
):
    clf = pair[True]
    train, val = np.sort(clf.train_indices), np.sort(clf.validation_indices)
    emb_fn = _bag_by_hand(marker_pretrained, marker_pretrained.vocab.lookup(marker_ref.var_names))
    lr, mean, scale, codes = _regression(emb_fn, marker_ref, clf, train)
    logits = lr.decision_function((emb_fn(marker_ref, val) - mean) / scale)

    def nll(t):
        p = _softmax(logits / t)
        return -np.log(p[np.arange(len(val)), codes[val]]).mean()

    t = clf.probe_["temperature"]  # searched over [0.05, 20] (these cells separate: small t)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    assert t != 1.0 and nll(t) <= min(nll(g) for g in grid) + 1e-9


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_query_cells_mix_probe_and_head_by_their_distance_to_the_reference(marker_cells, pair):
    from sklearn.neighbors import NearestNeighbors

    clf = pair[True]
    ref_z = clf.probe_["reference"].astype(np.float64)
    n = len(ref_z)
    own = NearestNeighbors(n_neighbors=16).fit(ref_z).kneighbors(ref_z)[0][:, 1:].mean(1)
    for cells, expect in (
        (marker_cells(5, seed=4, shift=True), "far"),
        (marker_cells(5, seed=5), "near"),
    ):
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
        got = clf.predict_proba(cells, progress=False, smooth_neighbors=1).to_numpy()
        mixed = w * p_probe + (1 - w) * p_head
        np.testing.assert_allclose(got, mixed, atol=1e-6)
        # by default the share 1 - w is the kernel mean mix of the cell's 15 nearest query
        # cells, weights exp(-d^2 / (s_i s_j)), s the distance to the 3rd nearest other cell
        assert SMOOTH_NEIGHBORS == 15
        d_all = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        nn = np.argsort(d_all, axis=1, kind="stable")[:, :15]
        d_nn = np.take_along_axis(d_all, nn, axis=1)
        s = d_nn[:, 3]
        a = np.exp(-(d_nn**2) / (s[:, None] * s[nn]))
        kernel_mean = (a[:, :, None] * mixed[nn]).sum(1) / a.sum(1, keepdims=True)
        smoothed = w * p_probe + (1 - w) * kernel_mean
        got = clf.predict_proba(cells, progress=False).to_numpy()
        np.testing.assert_allclose(got, smoothed, atol=1e-6)
        if expect == "near":
            assert np.allclose(got[w[:, 0] == 1], p_probe[w[:, 0] == 1])


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "15", None])
def test_smooth_neighbors_must_be_a_positive_integer(marker_cells, pair, bad):
    with pytest.raises(ValueError, match=r"smooth_neighbors=.* must be an integer >= 1"):
        pair[True].predict_proba(marker_cells(2, seed=4), progress=False, smooth_neighbors=bad)


def test_probe_save_load_round_trip(marker_cells, pair, tmp_path):
    clf = pair[True]
    query = marker_cells(5, seed=6)
    clf.save(tmp_path / "clf")
    assert (tmp_path / "clf" / PROBE_NAME).exists()
    loaded = ScGPTClassifier.load(tmp_path / "clf")
    pd.testing.assert_frame_equal(
        loaded.predict_proba(query, progress=False), clf.predict_proba(query, progress=False)
    )
    pair[False].save(tmp_path / "clf", overwrite=True)  # no probe: the old one must go
    assert not (tmp_path / "clf" / PROBE_NAME).exists()
    assert ScGPTClassifier.load(tmp_path / "clf").probe_ is None


def test_probe_of_an_earlier_version_or_a_lost_file_fails_to_load_with_its_reason(pair, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "clf"
    pair[True].save(path)
    tensors = load_file(str(path / PROBE_NAME))
    # the first probe kept a copy of the marker_pretrained encoder ("module.*"), not the gene table
    old = {k: v for k, v in tensors.items() if k not in ("genes", "table")}
    old["module.encoder.embedding.weight"] = torch.zeros(3, 2)
    save_file(old, str(path / PROBE_NAME))
    with pytest.raises(ValueError, match=r"lacks \['genes', 'table'\].*earlier omicformer"):
        ScGPTClassifier.load(path)
    (path / PROBE_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"has no probe\.safetensors"):
        ScGPTClassifier.load(path)


def test_annotate_probe_argument_reaches_training(marker_cells, marker_pretrained, marker_ref):
    from omicformer.scgpt import tl

    query = marker_cells(5, seed=3)
    for probe in (True, False):
        q = query.copy()
        clf = tl.annotate(q, marker_ref, label_key="cell_type", model=marker_pretrained,
                          max_epochs=1, probe=probe, n_models=1, progress=False,
                          return_model=True)  # fmt: skip
        assert (clf.probe_ is not None) is probe
        assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["probe"] is probe
    # a trained classifier is used as it is: the record says what labelled the cells
    q = query.copy()
    tl.annotate(q, marker_ref, label_key="cell_type", model=clf, probe=True, progress=False)
    assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["probe"] is False


def test_annotate_smooth_neighbors_reaches_prediction(marker_cells, pair, marker_ref):
    from omicformer.scgpt import tl

    clf = pair[True]
    query = ad.concat(
        [marker_cells(5, seed=4, shift=True), marker_cells(5, seed=5)]
    )  # far and near cells
    for k in (1, 4, SMOOTH_NEIGHBORS):
        q = query.copy()
        tl.annotate(
            q, marker_ref, label_key="cell_type", model=clf, smooth_neighbors=k, progress=False
        )
        expected = clf.predict_proba(query, progress=False, smooth_neighbors=k)
        np.testing.assert_allclose(q.obs["scgpt_cell_type_confidence"], expected.max(1))
        assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["smooth_neighbors"] == k
    assert not np.allclose(clf.predict_proba(query, progress=False, smooth_neighbors=1),
                           clf.predict_proba(query, progress=False))  # fmt: skip
    # without the probe nothing is smoothed, and the record says so
    q = query.copy()
    tl.annotate(q, marker_ref, label_key="cell_type", model=pair[False], progress=False)
    assert q.uns["scgpt"]["scgpt_cell_type"]["params"]["smooth_neighbors"] is None
    expected = pair[False].predict_proba(query, progress=False, smooth_neighbors=1)
    np.testing.assert_allclose(q.obs["scgpt_cell_type_confidence"], expected.max(1))
