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
    with pytest.warns(UserWarning, match=r"not in adata_truth.var_names.*change most instead"):
        auto = evaluate_perturbation(sub_pred, sub_truth)
    expected = evaluate_perturbation(sub_pred, sub_truth, de_genes="largest_change")
    np.testing.assert_allclose(auto.loc["mean", "pearson_de"], expected.loc["mean", "pearson_de"])
    with pytest.raises(KeyError, match=r"lists DE genes of .* not in adata_truth.var_names"):
        evaluate_perturbation(sub_pred, sub_truth, de_genes="rank_genes_groups")


def test_keys_of_the_first_cell_type_and_order_free_conditions(screen):
    truth, pred, _ = screen
    ranked = dict(truth.uns["rank_genes_groups_cov_all"])
    first = next(iter(ranked))
    # another cell type's list of a condition (not read: scGPT takes the first key's cell type)
    cond = first.split("_")[1]
    genes = np.asarray(ranked[first])
    decoy = {f"other_{cond}_1+1": genes[::-1][:20]}
    truth2 = truth.copy()
    truth2.uns["rank_genes_groups_cov_all"] = {
        first: genes,
        **decoy,
        **{k: v for k, v in ranked.items() if k != first},
    }
    np.testing.assert_allclose(
        evaluate_perturbation(pred, truth2).loc["mean", "pearson_de"],
        evaluate_perturbation(pred, truth).loc["mean", "pearson_de"],
    )
    # a double listed as "B+A" is found for the prediction's "A+B"
    double = next(k for k in ranked if "ctrl" not in k.split("_")[1])
    a, b = double.split("_")[1].split("+")
    swapped = {(f"{double.split('_')[0]}_{b}+{a}_{double.split('_')[2]}" if k == double else k): v
               for k, v in ranked.items()}  # fmt: skip
    truth3 = truth.copy()
    truth3.uns["rank_genes_groups_cov_all"] = swapped
    np.testing.assert_allclose(
        evaluate_perturbation(pred, truth3).loc["mean", "pearson_de"],
        evaluate_perturbation(pred, truth).loc["mean", "pearson_de"],
    )


def test_plot_draws_the_listed_genes(screen):
    truth, pred, _ = screen
    cond = str(pred.obs["condition"].iloc[0])
    fig = pl.perturbation(pred, truth, conditions=[cond], show=False)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    first = next(iter(truth.uns["rank_genes_groups_cov_all"])).split("_")
    listed = truth.uns["rank_genes_groups_cov_all"]["_".join([first[0], cond, first[2]])][:20]
    assert sorted(ticks) == sorted(str(g) for g in listed)
    plt.close(fig)
