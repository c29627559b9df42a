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


def test_seurat_transfer_is_the_80_cells_on_the_115_shared_genes(sets):
    ref = datasets.pbmc68k_reduced()
    task = sets.transfer_task(ref, None, query_set="pbmc_seurat_small")
    raw = datasets.pbmc_seurat_small()
    shared = [g for g in ref.var_names if g in set(raw.var_names)]
    assert len(shared) == 115
    assert list(task.query.var_names) == list(task.ref.var_names) == shared
    assert task.ref.n_obs == 700
    # megakaryocytes have no reference class: 71 of the 80 cells are scored
    assert task.query.n_obs == len(task.truth) == 71
    assert set(task.query.obs_names) <= set(raw.obs_names)
    assert sorted(set(task.truth)) == ["B", "NK", "T", "myeloid"]
    assert any("query: pbmc_seurat_small, 80 cells" in note for note in task.notes)


def test_group_task_keeps_query_cells_of_reference_labels(sets):
    import anndata as ad
    import pandas as pd

    labels = ["a", "a", "b", "c", "a", "b", "d"]
    adata = ad.AnnData(np.arange(14, dtype=np.float32).reshape(7, 2),
                       obs=pd.DataFrame({sets.LABEL: labels}, index=[f"c{i}" for i in range(7)]))  # fmt: skip
    is_ref = np.array([True, True, True, False, False, False, False])
    task = sets.group_task(adata, is_ref)
    assert list(task.ref.obs_names) == ["c0", "c1", "c2"]
    assert list(task.query.obs_names) == ["c4", "c5"]  # c3 ("c") and c6 ("d") not in the reference
    assert list(task.truth) == ["a", "b"]
    assert sets.LABEL not in task.query.obs
    assert adata.obs[sets.LABEL].tolist() == labels  # the input is left as it was
