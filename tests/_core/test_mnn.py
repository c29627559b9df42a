"""omicformer._core._mnn: mutual nearest neighbours and the correction built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omicformer._core._mnn import (
    adaptive_kernel,
    kernel_corrections,
    mixing,
    mnn_correct,
    mnn_pairs,
)


def _brute_force_pairs(a: np.ndarray, b: np.ndarray, k: int) -> set[tuple[int, int]]:
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    a_to_b = [set(np.argsort(row, kind="stable")[:k]) for row in d]
    b_to_a = [set(np.argsort(col, kind="stable")[:k]) for col in d.T]
    return {(i, j) for i in range(len(a)) for j in a_to_b[i] if i in b_to_a[j]}


@pytest.mark.parametrize("k", [1, 3, 10])
def test_pairs_are_the_mutual_k_nearest_neighbours(k):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 5)), rng.normal(0.5, 1.0, size=(30, 5))
    pairs = mnn_pairs(a, b, k)
    assert {tuple(p) for p in pairs.tolist()} == _brute_force_pairs(a, b, k)
    assert len(pairs) == len(_brute_force_pairs(a, b, k))
    np.testing.assert_array_equal(pairs, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])


def test_kernel_average_by_hand():
    # anchors at 0 and 1 carry vectors 1 and 3; s² = 1: a cell at 0 weighs them 1 : e^-1
    anchors, vectors = np.array([[0.0], [1.0]]), np.array([[1.0], [3.0]])
    got = kernel_corrections(np.array([[0.0], [1.0]]), anchors, vectors, s2=1.0, n_anchors=2)
    w = math.exp(-1)
    np.testing.assert_allclose(got[:, 0], [(1 + 3 * w) / (1 + w), (3 + 1 * w) / (1 + w)])
    # only the nearest anchor: its vector alone
    one = kernel_corrections(np.array([[0.2]]), anchors, vectors, s2=1.0, n_anchors=1)
    np.testing.assert_allclose(one, [[1.0]])


def test_a_shifted_batch_lands_on_the_larger_one():
    # batch "a": a 5 x 5 grid (spacing 1) and a far cluster of its own; batch "b": the grid
    # shifted by v (|v| < 1/2, so each shifted point's nearest grid point is its own)
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    own = np.array([[50.0, 50.0], [50.0, 51.0], [51.0, 50.0]])
    v = np.array([0.3, -0.2])
    x = np.vstack([grid, own, grid + v])
    batches = np.array(["a"] * 28 + ["b"] * 25)
    out, report = mnn_correct(x, batches, k=1)
    assert report["order"] == ["a", "b"]
    assert report["pairs"] == {"b": 25}  # the grid points, not the cluster
    np.testing.assert_allclose(out[:28], x[:28])  # the first batch stays
    np.testing.assert_allclose(out[28:], grid, atol=1e-6)  # every pair's vector is -v


def test_merge_order_is_by_size_and_the_result_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    batches = np.array(["small"] * 10 + ["large"] * 30 + ["mid"] * 20)
    out, report = mnn_correct(x, batches, k=5, random_state=3)
    assert report["order"] == ["large", "mid", "small"]
    assert set(report["pairs"]) == {"mid", "small"} and min(report["pairs"].values()) > 0
    np.testing.assert_array_equal(out[10:40], x[10:40].astype(np.float32))
    again, _ = mnn_correct(x, batches, k=5, random_state=3)
    np.testing.assert_array_equal(out, again)
    assert out.dtype == np.float32 and not np.allclose(out[:10], x[:10])


def _brute_force_mixing(a: np.ndarray, b: np.ndarray, k: int) -> float:
    both = np.vstack([a, b])
    side = np.array([0] * len(a) + [1] * len(b))
    d = ((both[:, None, :] - both[None, :, :]) ** 2).sum(-1)
    ratios = []
    for i, row in enumerate(d):
        own = np.sum(side == side[i]) - 1  # at most as many neighbours as its own side's cells
        if min(k, own) < 1:
            continue
        row = row.copy()
        row[i] = np.inf  # not the cell itself
        nearest = np.argsort(row, kind="stable")[: min(k, own)]
        other_share = np.mean(side != side[i])  # the other side's share of all cells
        ratios.append(np.mean(side[nearest] != side[i]) / other_share)
    return float(np.mean(ratios))


def test_mixing_by_brute_force_and_at_its_ends():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(25, 3)), rng.normal(0.8, 1.0, size=(40, 3))
    assert mixing(a, b, k=7) == pytest.approx(_brute_force_mixing(a, b, 7))
    assert mixing(a, b, k=7) == pytest.approx(mixing(b, a, k=7))  # symmetric
    assert mixing(a, b + 100.0, k=7) == 0.0  # apart
    same = rng.normal(size=(600, 3))  # one population split at random: about 1
    assert mixing(same[:200], same[200:], k=30) == pytest.approx(1.0, abs=0.1)
    # a side smaller than k + 1 cells: its cells need not count the other side's cells among
    # their neighbours (10 and 12 cells far apart scored 1.05 and took the wide kernel)
    small, far = rng.normal(size=(10, 3)), rng.normal(size=(12, 3)) + 100.0
    assert mixing(small, far, k=30) == 0.0
    near = np.vstack([small, rng.normal(size=(12, 3))])  # 10 cells among 22 of both
    assert mixing(near[:10], near[10:], k=30) == pytest.approx(
        _brute_force_mixing(near[:10], near[10:], 30)
    )
    # one cell inside the other batch's cloud: its neighbours (not it) tell; far away: 0
    cloud = rng.normal(size=(100, 3))
    assert mixing(cloud[:1], cloud[1:], k=30) == pytest.approx(
        _brute_force_mixing(cloud[:1], cloud[1:], 30)
    )
    assert mixing(cloud[:1], cloud[1:], k=30) > 0.5
    assert mixing(cloud[:1] + 100.0, cloud[1:], k=30) == 0.0
    _, report = mnn_correct(np.vstack([small, far]), np.array(["a"] * 10 + ["b"] * 12))
    assert report["kernel"]["a"] == {"sigma": 0.02, "n_anchors": 50}


def test_adaptive_kernel_between_narrow_and_wide():
    assert adaptive_kernel(0.0) == adaptive_kernel(0.5) == (0.02, 50)
    assert adaptive_kernel(0.7) == adaptive_kernel(1.3) == pytest.approx((0.1, 200))
    sigma, n = adaptive_kernel(0.6)  # half way, geometrically
    assert sigma == pytest.approx(0.02 * math.sqrt(5)) and n == 100


def test_correction_reports_the_kernel_it_chose():
    rng = np.random.default_rng(4)
    # more than MIXING_K + 1 cells per batch, so that a cell's neighbours can all be its own
    apart = np.vstack([rng.normal(size=(60, 3)), rng.normal(size=(40, 3)) + 20.0])
    batches = np.array(["a"] * 60 + ["b"] * 40)
    _, report = mnn_correct(apart, batches, k=5)
    assert report["mixing"] == {"b": 0.0}
    assert report["kernel"] == {"b": {"sigma": 0.02, "n_anchors": 50}}
    _, fixed = mnn_correct(apart, batches, k=5, sigma=0.1, n_anchors=200)
    assert "mixing" not in fixed and fixed["kernel"] == {"b": {"sigma": 0.1, "n_anchors": 200}}
