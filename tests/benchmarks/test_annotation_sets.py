"""benchmarks/annotation.py: the transfer sets whose query is the two CITE-seq runs."""

from __future__ import annotations

import numpy as np
import pytest

from omicformer import datasets


@pytest.fixture(scope="module")
def sets(load_benchmark):
    load_benchmark("annotation")  # puts benchmarks/ on sys.path, as running the script does
    import annotation_sets

    return annotation_sets


def test_cite_transfer_scores_the_protein_labels_on_the_shared_genes(sets, load_benchmark):
    integration_sets = load_benchmark("integration_sets")
    ref = datasets.pbmc68k_reduced()
    task = sets.transfer_cite_task(ref, None, sets.BULK_TO_COARSE)
    cite = datasets.pbmc_cite_two_batch()
    assert task.query.n_obs == cite.n_obs == 400
    shared = [g for g in ref.var_names if g in set(cite.var_names)]
    assert list(task.query.var_names) == list(task.ref.var_names) == shared
    np.testing.assert_array_equal(
        task.query.X.toarray(), cite[:, shared].layers["counts"].toarray()
    )
    cells, _, column = integration_sets.pbmc_cite()
    np.testing.assert_array_equal(task.truth, cells.obs[column].astype(str).to_numpy())
    assert sorted(set(task.truth)) == ["B", "NK", "T", "myeloid"]
    assert task.query.obs.shape[1] == 0  # the query carries no label column
    assert set(sets.BULK_TO_COARSE.values()) >= set(task.truth)
