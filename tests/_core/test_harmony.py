"""omicformer._core._harmony: Harmony on the top principal components of an embedding."""

from __future__ import annotations

import numpy as np
import pytest

from omicformer._core._harmony import harmony_correct


def _shifted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three batches of the same two cell types, each batch offset by its own vector."""
    rng = np.random.default_rng(seed)
    types = np.tile([0, 1], 90)
    batches = np.repeat(["a", "b", "c"], 60)
    centres = np.zeros((2, 8))
    centres[1, 0] = 6.0
    offsets = {
        "a": np.zeros(8),
        "b": np.r_[0, 2, 0, 0, 0, 0, 0, 0],
        "c": np.r_[0, 0, -2, 0, 0, 0, 0, 0],
    }
    x = centres[types] + np.stack([offsets[b] for b in batches]) + rng.normal(0, 0.3, (180, 8))
    return x, batches, types


def _batch_spread(z: np.ndarray, batches: np.ndarray, types: np.ndarray) -> float:
    """Largest distance between two batches' means of one cell type."""
    spread = 0.0
    for t in np.unique(types):
        means = [z[(batches == b) & (types == t)].mean(0) for b in np.unique(batches)]
        spread = max(spread, max(np.linalg.norm(m - n) for m in means for n in means))
    return spread


def test_batch_offsets_are_removed_and_cell_types_kept():
    x, batches, types = _shifted()
    z, report = harmony_correct(x, batches, random_state=0)
    assert z.shape == (180, 8) and z.dtype == np.float32  # 8 dimensions: 8 components
    assert _batch_spread(x, batches, types) > 2.5  # before: batches 2-2.8 apart
    assert _batch_spread(z, batches, types) < 0.5
    gap = np.linalg.norm(z[types == 0].mean(0) - z[types == 1].mean(0))
    assert gap > 5.0  # the two cell types stay 6 apart
    assert report["method"] == "harmony" and report["n_pcs"] == 8
    assert (report["theta"], report["lamb"]) == (2.0, 0.5)  # published theta, half its lamb
    assert (report["n_runs"], report["n_rounds"]) == (5, 2)
    assert 1 <= report["iterations"] <= 20 and report["n_clusters"] >= 1


def test_components_are_the_mean_of_harmonypy_runs_on_the_pca():
    import harmonypy
    import pandas as pd
    from sklearn.decomposition import PCA

    from omicformer._core._harmony import run_seeds

    x, batches, _ = _shifted(2)  # with noise dimensions, Harmony's start matters
    x = np.hstack([x, np.random.default_rng(3).normal(size=(180, 60))])
    pcs = PCA(20, random_state=7).fit_transform(x - x.mean(0))

    def harmonypy_run(seed, pcs=pcs):
        ho = harmonypy.run_harmony(pcs, pd.DataFrame({"b": batches}), ["b"], theta=1.0, lamb=0.5,
                                   max_iter_harmony=20, epsilon_harmony=1e-4, random_state=seed,
                                   verbose=False)  # fmt: skip
        return np.asarray(ho.Z_corr)

    one, report = harmony_correct(x, batches, n_pcs=20, theta=1.0, lamb=0.5, n_runs=1,
                                  n_rounds=1, random_state=7)  # fmt: skip
    np.testing.assert_allclose(one, harmonypy_run(7), atol=1e-5)  # one run: seeded with 7
    assert report["n_pcs"] == 20 and (report["theta"], report["lamb"]) == (1.0, 0.5)
    assert (report["n_runs"], report["n_rounds"]) == (1, 1)
    seeds = run_seeds(7, 3)
    assert seeds[0] == 7 and len(set(seeds)) == 3 and run_seeds(7, 3) == seeds
    z, report = harmony_correct(x, batches, n_pcs=20, theta=1.0, lamb=0.5, n_runs=3,
                                n_rounds=1, random_state=7)  # fmt: skip
    runs = [harmonypy_run(s) for s in seeds]
    assert not np.allclose(runs[0], runs[1], atol=1e-3)  # the starts settle differently
    np.testing.assert_allclose(z, np.mean(runs, 0), atol=1e-5)
    assert report["n_runs"] == 3
    # a second round: the same on the components of the first round's (float32) mean, seeded 8
    first = np.mean(runs, 0).astype(np.float32).astype(np.float64)
    pcs2 = PCA(20, random_state=8).fit_transform(first - first.mean(0))
    second = np.mean([harmonypy_run(s, pcs2) for s in run_seeds(8, 3)], 0)
    zz, report = harmony_correct(x, batches, n_pcs=20, theta=1.0, lamb=0.5, n_runs=3,
                                 n_rounds=2, random_state=7)  # fmt: skip
    np.testing.assert_allclose(zz, second, atol=1e-4)
    assert (report["n_runs"], report["n_rounds"]) == (3, 2)
    with pytest.raises(ValueError, match="n_runs=0 must be an integer >= 1"):
        harmony_correct(x, batches, n_runs=0)
    with pytest.raises(ValueError, match="n_rounds=0 must be an integer >= 1"):
        harmony_correct(x, batches, n_rounds=0)


def test_same_seed_same_output_other_seed_other_output():
    x, batches, _ = _shifted(2)
    x = np.hstack([x, np.random.default_rng(3).normal(size=(180, 60))])
    one, _ = harmony_correct(x, batches, random_state=4)
    np.testing.assert_array_equal(one, harmony_correct(x, batches, random_state=4)[0])
    assert not np.allclose(one, harmony_correct(x, batches, random_state=5)[0])


def test_bad_batches_are_refused():
    x, batches, _ = _shifted()
    with pytest.raises(ValueError, match="at least two batches"):
        harmony_correct(x, np.full(len(x), "a"))
    with pytest.raises(ValueError, match="batches has 179 entries for 180 cells"):
        harmony_correct(x, batches[:-1])


def test_a_dozen_cells_get_one_cluster():
    # harmonypy's default number of clusters, round(cells / 30), is 0 below 15 cells
    rng = np.random.default_rng(0)
    batches = np.repeat(["a", "b"], 6)
    x = rng.normal(0, 0.3, (12, 5)) + np.where(batches == "b", 2.0, 0.0)[:, None]
    z, report = harmony_correct(x, batches, random_state=0)
    assert report["n_clusters"] == 1 and z.shape == (12, 5)
    gap = np.linalg.norm(z[batches == "a"].mean(0) - z[batches == "b"].mean(0))
    before = np.linalg.norm(x[batches == "a"].mean(0) - x[batches == "b"].mean(0))
    assert gap < 0.5 * before  # the batch offset is (mostly) removed
