"""DE genes of the perturbation metrics: GEARS' lists, scored as scGPT's official code does."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from omicformer import datasets
from omicformer.scgpt import pl
from omicformer.scgpt._perturb_eval import evaluate_perturbation


def official_de_metrics(truth, pred_means: dict[str, np.ndarray]) -> dict[str, float]:
    """scGPT's compute_perturbation_metrics (scgpt/utils/util.py), DE part, written out.

    DE genes: uns["rank_genes_groups_cov_all"]["_".join([cell type, condition, dose])][:20],
    cell type and dose from the first key, looked up in var.index; Pearson (scipy) of the
    condition means (and of their deltas to the control mean) over those genes; conditions
    whose true mean over them is all zero skipped; the mean over conditions.
    """
    X = np.asarray(truth.X.toarray(), dtype=np.float64)
    labels = truth.obs["condition"].astype(str).to_numpy()
    mean_ctrl = X[labels == "ctrl"].mean(0)
    first = next(iter(truth.uns["rank_genes_groups_cov_all"])).split("_")
    geneid2idx = dict(zip(truth.var.index.values, range(truth.n_vars), strict=True))
    de, de_delta = [], []
    for c, pred_mean in pred_means.items():
        true_mean = X[labels == c].mean(0)
        genes = truth.uns["rank_genes_groups_cov_all"]["_".join([first[0], c, first[2]])][:20]
        idx = [geneid2idx[g] for g in genes]
        if np.all(true_mean[idx] == 0):
            continue
        de.append(pearsonr(true_mean[idx], pred_mean[idx])[0])
        de_delta.append(
            pearsonr(true_mean[idx] - mean_ctrl[idx], pred_mean[idx] - mean_ctrl[idx])[0]
        )
    return {"pearson_de": float(np.mean(de)), "pearson_de_delta": float(np.mean(de_delta))}


@pytest.fixture(scope="module")
def screen():
    """A small simulated screen in the GEARS layout (with its DE lists) and noisy predictions."""
    truth = datasets.perturbseq_simulation(
        n_cells=900, n_genes=60, n_singles=8, n_doubles=4, random_state=3
    )
    labels = truth.obs["condition"].astype(str).to_numpy()
    conds = [c for c in dict.fromkeys(labels) if c != "ctrl"]
    rng = np.random.default_rng(0)
    X = truth.X.toarray().astype(np.float64)
    means = {c: X[labels == c].mean(0) + rng.normal(0, 0.3, truth.n_vars) for c in conds}
    pred = ad.AnnData(
        np.array([means[c] for c in conds], dtype=np.float32),
        obs=pd.DataFrame({"condition": conds}, index=conds),
        var=pd.DataFrame(index=truth.var_names),
    )
    return truth, pred, {c: pred.X[i].astype(np.float64) for i, c in enumerate(conds)}


def test_de_metrics_equal_scgpt_official_on_gears_lists(screen):
    truth, pred, means = screen
    got = evaluate_perturbation(pred, truth)
    official = official_de_metrics(truth, means)
    for key, value in official.items():
        assert got.loc["mean", key] == pytest.approx(value, abs=1e-5), key
    # the lists include the perturbed genes; the largest-change rule leaves them out
    other = evaluate_perturbation(pred, truth, de_genes="largest_change")
    assert abs(other.loc["mean", "pearson_de_delta"] - got.loc["mean", "pearson_de_delta"]) > 1e-3
    same = evaluate_perturbation(pred, truth, de_genes="rank_genes_groups")
    np.testing.assert_allclose(same.loc["mean", "pearson_de"], got.loc["mean", "pearson_de"])


def test_largest_change_when_the_lists_are_absent(screen):
    truth, pred, _ = screen
    bare = truth.copy()
    del bare.uns["rank_genes_groups_cov_all"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = evaluate_perturbation(pred, bare)
    expected = evaluate_perturbation(pred, truth, de_genes="largest_change")
    np.testing.assert_allclose(auto["pearson_de_delta"].to_numpy(float),
                               expected["pearson_de_delta"].to_numpy(float))  # fmt: skip
    with pytest.raises(KeyError, match=r"de_genes='rank_genes_groups' reads .*does not have"):
        evaluate_perturbation(pred, bare, de_genes="rank_genes_groups")
    with pytest.raises(ValueError, match=r"de_genes='top' must be one of"):
        evaluate_perturbation(pred, truth, de_genes="top")


def test_a_gene_subset_falls_back_with_a_warning_under_auto(screen):
    truth, pred, _ = screen
    listed = set(
        truth.uns["rank_genes_groups_cov_all"][next(iter(truth.uns["rank_genes_groups_cov_all"]))]
    )
    keep = [g for g in truth.var_names if g not in listed][:30] + sorted(listed)[:5]
    sub_truth, sub_pred = truth[:, keep].copy(), pred[:, keep].copy()
    with pytest.warns(
        UserWarning, match=r"neither in adata_truth.var_names nor in .*change most instead"
    ):
        auto = evaluate_perturbation(sub_pred, sub_truth)
    expected = evaluate_perturbation(sub_pred, sub_truth, de_genes="largest_change")
    np.testing.assert_allclose(auto.loc["mean", "pearson_de"], expected.loc["mean", "pearson_de"])
    with pytest.raises(KeyError, match=r"lists DE genes of .* neither in adata_truth.var_names"):
        evaluate_perturbation(sub_pred, sub_truth, de_genes="rank_genes_groups")


def _with_lists(truth, ranked):
    out = truth.copy()
    out.uns["rank_genes_groups_cov_all"] = ranked
    return out


def test_keys_of_the_first_cell_type_and_order_free_conditions(screen):
    truth, pred, _ = screen
    ranked = dict(truth.uns["rank_genes_groups_cov_all"])
    reference = evaluate_perturbation(pred, truth).loc["mean", "pearson_de"]
    # another cell type's list of the second condition, before its own: not read (scGPT takes
    # the first key's cell type); other genes, so reading it would change the score
    first, second = list(ranked)[:2]
    cond = second.split("_")[1]
    others = [g for g in truth.var_names if g not in set(ranked[second])][:20]
    decoy = {first: ranked[first], f"other_{cond}_1+1": np.asarray(others)}
    truth2 = _with_lists(truth, {**decoy, **ranked})
    assert evaluate_perturbation(pred, truth2).loc["mean", "pearson_de"] == pytest.approx(reference)
    misread = {**{k: v for k, v in ranked.items() if k != second}, second: np.asarray(others)}
    assert evaluate_perturbation(pred, _with_lists(truth, misread)).loc[
        "mean", "pearson_de"
    ] != pytest.approx(reference)  # the decoy's genes do change it
    # a double listed as "B+A" is found for the prediction's "A+B"; lists stored as bytes
    double = next(k for k in ranked if "ctrl" not in k.split("_")[1])
    cell, pair, dose = double.split("_")
    a, b = pair.split("+")
    swapped = {(f"{cell}_{b}+{a}_{dose}" if k == double else k): np.asarray(v, dtype=bytes)
               for k, v in ranked.items()}  # fmt: skip
    got = evaluate_perturbation(pred, _with_lists(truth, swapped), de_genes="rank_genes_groups")
    assert got.loc["mean", "pearson_de"] == pytest.approx(reference)


def test_a_cell_type_with_an_underscore_is_read_whole(screen):
    truth, pred, _ = screen
    reference = evaluate_perturbation(pred, truth).loc["mean", "pearson_de_delta"]
    renamed = _with_lists(truth, {
        k.replace("simulated_", "T_cell_", 1): v
        for k, v in truth.uns["rank_genes_groups_cov_all"].items()
    })  # fmt: skip
    renamed.obs["cell_type"] = "T_cell"
    got = evaluate_perturbation(pred, renamed, de_genes="rank_genes_groups")
    assert got.loc["mean", "pearson_de_delta"] == pytest.approx(reference)


@pytest.mark.parametrize("ranked", [{}, {"KLF1+ctrl": ["A"]}])
def test_unreadable_lists_fall_back_under_auto(screen, ranked):
    truth, pred, _ = screen
    bad = _with_lists(truth, ranked)
    with pytest.warns(UserWarning, match=r"do not read '<cell type>_<condition>_<dose>'"):
        auto = evaluate_perturbation(pred, bad)
    expected = evaluate_perturbation(pred, truth, de_genes="largest_change")
    assert auto.loc["mean", "pearson_de"] == pytest.approx(expected.loc["mean", "pearson_de"])
    with pytest.raises(KeyError, match=r"do not read"):
        evaluate_perturbation(pred, bad, de_genes="rank_genes_groups")


def test_gears_files_read_with_read_gears_find_their_listed_gene_ids(screen, tmp_path):
    # GEARS files name genes by id and list DE genes by id; read_gears names them by symbol
    # and keeps the ids in var["gene_id"]
    truth, pred, _ = screen
    ids = {g: f"ENSG{i:011d}" for i, g in enumerate(truth.var_names)}
    gears = truth.copy()
    gears.var["gene_name"] = list(truth.var_names)
    gears.var_names = [ids[g] for g in truth.var_names]
    gears.uns["rank_genes_groups_cov_all"] = {
        k: np.asarray([ids[g] for g in v])
        for k, v in truth.uns["rank_genes_groups_cov_all"].items()
    }
    gears.write_h5ad(tmp_path / "perturb_processed.h5ad")
    read = datasets.read_gears(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = evaluate_perturbation(pred, read, de_genes="rank_genes_groups")
    official = evaluate_perturbation(pred, truth)
    np.testing.assert_allclose(got["pearson_de_delta"].to_numpy(float),
                               official["pearson_de_delta"].to_numpy(float))  # fmt: skip


def test_plot_draws_the_listed_genes(screen):
    truth, pred, _ = screen
    cond = str(pred.obs["condition"].iloc[0])
    fig = pl.perturbation(pred, truth, conditions=[cond], show=False)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    first = next(iter(truth.uns["rank_genes_groups_cov_all"])).split("_")
    listed = truth.uns["rank_genes_groups_cov_all"]["_".join([first[0], cond, first[2]])][:20]
    assert sorted(ticks) == sorted(str(g) for g in listed)
    plt.close(fig)
