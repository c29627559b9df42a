"""The smoothing of the far cells' predictions over their query neighbours (``_probe_smooth``)."""

import numpy as np

import omicformer.scgpt.model._probe_smooth as smooth_module
from omicformer.scgpt.model._probe_smooth import (
    ProbeParts,
    mean_parts,
    smooth_far_cells,
    smooth_parts,
)


def test_smooth_far_cells_by_hand():
    z = np.array([[0.0], [1.0], [10.0], [11.0]])  # two pairs of nearest cells
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.1, 0.9]])
    p_probe = np.array([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])
    w = np.array([[1.0], [0.0], [0.5], [0.0]])
    got = smooth_far_cells(p, p_probe, w, z, k=2)
    # k=2: each cell and its partner at distance 1; every scale s is 1 (the nearest other
    # cell, as k - 1 < 3), so the partner weighs e = exp(-1 / (1 * 1)) and the cell itself 1
    e = np.exp(-1.0)
    m1 = (p[1] + e * p[0]) / (1 + e)
    m2 = (p[2] + e * p[3]) / (1 + e)
    m3 = (p[3] + e * p[2]) / (1 + e)
    expected = [p_probe[0], m1, 0.5 * p_probe[2] + 0.5 * m2, m3]  # cell 0 among the reference
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(m1, [e / (1 + e), 1 / (1 + e)])
    np.testing.assert_array_equal(smooth_far_cells(p, p_probe, w, z, k=1), p)


def test_smooth_far_cells_keeps_a_small_group_apart_from_the_rest():
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(50, 0.1, (3, 2))])
    p = np.vstack([np.tile([0.9, 0.1], (20, 1)), np.tile([0.2, 0.8], (3, 1))])
    w = np.zeros((23, 1))  # every cell far from the reference
    got = smooth_far_cells(p, np.zeros_like(p), w, z, k=15)
    # 12 of a rare cell's 15 neighbours lie in the large group, but 500 times further away
    # than its own two: the group of three keeps its label
    assert (got[20:].argmax(1) == 1).all() and (got[:20].argmax(1) == 0).all()
    np.testing.assert_allclose(got[20:], p[20:], atol=1e-6)
    # the plain mean over the 15 neighbours would have moved them
    nn = np.argsort(((z[:, None] - z[None]) ** 2).sum(-1), axis=1)[:, :15]
    assert (p[nn].mean(1)[20:].argmax(1) == 0).all()


def test_smooth_far_cells_finds_neighbours_approximately_above_a_size(monkeypatch):
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 20, (4, 8))
    z = np.vstack([c + rng.normal(0, 0.5, (60, 8)) for c in centres])
    p = rng.dirichlet(np.ones(3), size=len(z))
    w = rng.uniform(0, 1, (len(z), 1))
    exact = smooth_far_cells(p, np.zeros_like(p), w, z, k=15)
    monkeypatch.setattr(smooth_module, "SMOOTH_EXACT_CELLS", 100)  # 240 cells: approximate
    monkeypatch.setattr(smooth_module, "SMOOTH_CHUNK", 50)  # several chunks
    approx = smooth_far_cells(p, np.zeros_like(p), w, z, k=15)
    np.testing.assert_allclose(approx, exact, atol=1e-6)  # well-separated groups: same neighbours


def test_mean_parts_averages_field_by_field_and_drops_the_probe_when_one_lacks_it():
    a = ProbeParts(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]), np.array([[0.2]]),
                   np.array([[0.0, 2.0]]))  # fmt: skip
    b = ProbeParts(np.array([[0.0, 1.0]]), np.array([[0.1, 0.9]]), np.array([[0.6]]),
                   np.array([[4.0, 0.0]]))  # fmt: skip
    m = mean_parts([a, b])
    np.testing.assert_allclose(m.p, [[0.5, 0.5]])
    np.testing.assert_allclose(m.p_probe, [[0.3, 0.7]])
    np.testing.assert_allclose(m.w, [[0.4]])
    np.testing.assert_allclose(m.z, [[2.0, 1.0]])
    alone = mean_parts([a, ProbeParts(np.array([[0.0, 1.0]]))])  # one without a probe
    np.testing.assert_allclose(alone.p, [[0.5, 0.5]])
    assert alone.w is None and alone.p_probe is None and alone.z is None
    np.testing.assert_array_equal(smooth_parts(alone, 15), alone.p)  # nothing to smooth with
