"""``tl.annotate(method="knn")``: who votes, and how ties are broken (hand-built examples)."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from omicformer.scgpt import tl
from omicformer.scgpt._annotate import NearestTieKNN, vote, voters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("n_neighbors", "counts", "expected"),
    [(15, [6, 4, 4], 4), (15, [100, 100], 15), (15, [2, 2], 2), (3, [1, 1, 1], 1), (5, [9], 5)],
)
def test_voters_are_at_most_the_cells_per_class(n_neighbors, counts, expected):
    labels = np.repeat([f"c{i}" for i in range(len(counts))], counts)
    assert voters(n_neighbors, labels) == expected


def test_vote_shares_and_ties_go_to_the_nearest_voter():
    # reference on a line: "b" at 0 and 3, "a" at 1 and 10; query cells at 0.4, 2.4 and 9
    ref = np.array([[0.0], [1.0], [3.0], [10.0]])
    labels = np.array(["b", "a", "b", "a"])
    knn = KNeighborsClassifier(2).fit(ref, labels)
    shares, best = vote(knn, labels, np.array([[0.4], [2.4], [9.0]]))
    # 0.4: voters 0 (b) and 1 (a), tie, b nearer; 2.4: 3 (b) then 1 (a), b nearer;
    # 9.0: 10 (a) then 3 (b), a nearer (sklearn's argmax took "a", the first class, for all)
    np.testing.assert_array_equal(shares, [[0.5, 0.5]] * 3)
    assert list(knn.classes_[best]) == ["b", "b", "a"]
    # the model tl.annotate returns labels further cells the same way
    model = NearestTieKNN(2).fit(ref, labels)
    assert list(model.predict(np.array([[0.4], [2.4], [9.0]]))) == ["b", "b", "a"]
    shares, best = vote(KNeighborsClassifier(3).fit(ref, labels), labels, np.array([[2.0]]))
    np.testing.assert_array_equal(shares, [[1 / 3, 2 / 3]])  # 1 (a), 3 (b), 0 (b)
    assert list(best) == [1]


def test_knn_from_a_reference_smaller_than_the_neighbours(clf_pretrained, clf_ref_query):
    # 5 + 5 + 5 reference cells against the default 15 neighbours: every query cell got the
    # same label (the whole reference voted); now 5 vote
    ref, query = clf_ref_query
    small = ref[np.concatenate([np.flatnonzero(ref.obs["cell_type"] == t)[:5]
                                for t in ("T", "B", "Mono")])].copy()  # fmt: skip
    out = tl.annotate(query, small, label_key="cell_type", model=clf_pretrained, method="knn",
                      progress=False, copy=True)  # fmt: skip
    got = out.obs["scgpt_cell_type"].astype(str).to_numpy()
    assert out.uns["scgpt"]["scgpt_cell_type"]["params"]["n_neighbors"] == 5
    assert len(set(got)) == 3
    assert (got == query.obs["cell_type"].to_numpy()).mean() > 0.6  # one label: 1/3
