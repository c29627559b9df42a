"""Temperature scaling of ScGPTClassifier: the fit, and held-out cells of one class."""

import warnings

import numpy as np
import pytest
import torch

from omicformer.scgpt.model import ScGPTClassifier
from omicformer.scgpt.train._classify import fit_temperature

pytestmark = pytest.mark.usefixtures("one_thread")


def _nll(logits, labels, t):
    z = logits / t
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def test_temperature_minimises_the_held_out_loss():
    # two classes, one cell of each on the wrong side: an overconfident head (t > 1 wanted)
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 3.0]])
    labels = np.array([0, 1, 0, 1, 1, 0])
    t = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 2000))
    best = grid[np.argmin([_nll(logits, labels, g) for g in grid])]
    assert t > 1 and t == pytest.approx(best, rel=0.01)


def test_one_class_held_out_leaves_the_temperature_at_one():
    # every held-out cell right and of one class: the loss falls as t shrinks, to the grid's end
    logits = np.array([[2.0, 0.0, -1.0], [1.0, 0.5, 0.0], [3.0, -1.0, 0.0]])
    labels = np.zeros(3, dtype=int)
    assert _nll(logits, labels, 0.05) < _nll(logits, labels, 1.0)  # what the fit would chase
    assert fit_temperature(logits, labels) == 1.0


def test_training_whose_held_out_cells_are_one_class_warns_and_stays_uncalibrated(
    annotate_cells, clf_pretrained
):
    # 40 T cells (4 held out) beside 9 B and 9 Mono cells (none held out: floor(0.9) = 0)
    cells = annotate_cells(40, seed=3)
    keep = np.flatnonzero(cells.obs["cell_type"] == "T").tolist()
    for t in ("B", "Mono"):
        keep += np.flatnonzero(cells.obs["cell_type"] == t)[:9].tolist()
    ref = cells[np.sort(keep)].copy()
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    with torch.random.fork_rng(), pytest.warns(UserWarning, match="all of one class \\('T'\\)"):
        clf.train(max_epochs=2, batch_size=16, accelerator="cpu", enable_progress_bar=False)
    assert clf.temperature_ == 1.0 and clf.probe_["temperature"] == 1.0
    scores = clf.validation_scores_
    assert scores["n_cells"] == 4 and scores["n_classes"] == 1


def test_held_out_cells_of_every_class_do_not_warn(annotate_cells, clf_pretrained):
    ref = annotate_cells(12, seed=4)  # floor(1.2) = 1 held-out cell of each of the 3 types
    ScGPTClassifier.setup_anndata(ref, labels_key="cell_type")
    clf = ScGPTClassifier.load_pretrained(clf_pretrained, ref)
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*all of one class")
        clf.train(max_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False)
    assert clf.validation_scores_["n_classes"] == 3
