"""The simulated Perturb-seq dataset: its layout, conditions and effects."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer import datasets
from omicformer.scgpt._conditions import parse_condition

ROOT = Path(__file__).resolve().parents[2]
SCGPT_DATA = ROOT / "src" / "omicformer" / "scgpt" / "_data"
SMALL = {"n_cells": 600, "n_genes": 60, "n_singles": 10, "n_doubles": 5}


@pytest.fixture(scope="module")
def sim():
    return datasets.perturbseq_simulation()


@pytest.fixture(scope="module")
def default_vocab():
    """The frozen 4,000-gene list the simulation draws from (the default v2 vocabulary)."""
    path = Path(datasets.__file__).parent / "data" / "perturbseq_simulation_genes.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        genes = {line.strip() for line in fh if line.strip()}
    assert len(genes) == 4000
    return genes


@pytest.fixture(scope="module")
def stats(sim):
    """Per condition: mean, variance of the mean and cell count of X (dense float64)."""
    X = sim.X.toarray().astype(np.float64)
    labels = sim.obs["condition"].astype(str).to_numpy()
    out = {}
    for c in np.unique(labels):
        rows = X[labels == c]
        out[c] = (rows.mean(0), rows.var(0, ddof=1) / len(rows), len(rows))
    return out


# --- perturbseq_simulation --------------------------------------------------------------------


def test_exported():
    for name in ("perturbseq_simulation", "read_gears", "read_scperturb"):
        assert name in datasets.__all__
        assert callable(getattr(datasets, name))


def test_simulation_deterministic():
    a = datasets.perturbseq_simulation(**SMALL, random_state=3)
    b = datasets.perturbseq_simulation(**SMALL, random_state=3)
    c = datasets.perturbseq_simulation(**SMALL, random_state=4)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    np.testing.assert_array_equal(a.layers["counts"].toarray(), b.layers["counts"].toarray())
    assert list(a.var_names) == list(b.var_names)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert a.shape == c.shape == (600, 60)
    assert list(a.var_names) != list(c.var_names)
    assert not np.array_equal(a.layers["counts"].toarray(), c.layers["counts"].toarray())


def test_gears_layout(sim, lognorm):
    assert sim.shape == (6000, 200)
    assert list(sim.obs_names[:3]) == ["cell0", "cell1", "cell2"]
    assert sim.obs_names.is_unique and sim.var_names.is_unique
    obs = sim.obs
    assert list(obs.columns) == ["condition", "cell_type", "dose_val", "control", "condition_name"]
    for col in ("condition", "cell_type", "dose_val", "condition_name"):
        assert isinstance(obs[col].dtype, pd.CategoricalDtype)
    cond = obs["condition"].astype(str)
    is_ctrl = cond == "ctrl"
    assert (obs["cell_type"] == "simulated").all()
    assert (obs["dose_val"].astype(str) == np.where(is_ctrl, "1", "1+1")).all()
    assert obs["control"].dtype.kind == "i"
    assert (obs["control"] == is_ctrl.astype(int)).all()
    expected = "simulated_" + cond + "_" + obs["dose_val"].astype(str)
    assert (obs["condition_name"].astype(str) == expected).all()
    assert "simulated_ctrl_1" in set(obs["condition_name"])
    assert (sim.var["gene_name"] == sim.var_names).all()

    assert sp.isspmatrix_csr(sim.X) and sim.X.dtype == np.float32
    counts = sim.layers["counts"]
    assert sp.isspmatrix_csr(counts)
    dense = counts.toarray()
    np.testing.assert_array_equal(dense, np.rint(dense))
    assert dense.min() >= 0
    np.testing.assert_allclose(sim.X.toarray(), lognorm(dense), rtol=1e-6, atol=1e-6)

    totals = dense.sum(axis=1)
    assert totals.min() > 0
    assert 1000 < np.median(totals) < 10000  # a few thousand UMIs per cell
    assert 0.15 < (dense == 0).mean() < 0.7  # realistic sparsity
    assert ((dense == 0).mean(axis=0) > 0.7).sum() >= 10  # lowly expressed genes: mostly zeros

    info = sim.uns["omicformer_dataset"]
    assert info["simulated"] is True
    assert info["seed"] == 0
    assert info["params"]["n_cells"] == 6000
    grn = info["grn"]
    n_edges = len(grn["regulator"])
    for key in ("target", "sign", "hill_k", "hill_n"):
        assert len(grn[key]) == n_edges
    assert set(np.unique(grn["sign"])) == {-1, 1}
    for key in ("layer", "logic", "leak", "basal", "dispersion", "in_default_vocab"):
        assert len(grn[key]) == 200
    assert {"and", "or"} <= set(grn["logic"])


def test_rank_genes_groups(sim, stats):
    rank = sim.uns["rank_genes_groups_cov_all"]
    names = set(sim.obs["condition_name"].astype(str)) - {"simulated_ctrl_1"}
    assert set(rank) == names
    ctrl = stats["ctrl"][0]
    single = next(c for c in stats if c.endswith("+ctrl"))
    double = next(c for c in stats if "ctrl" not in c.split("+"))
    for c in (single, double):
        top = np.asarray(rank[f"simulated_{c}_1+1"], dtype=str)
        assert len(top) == 20 and set(top) <= set(sim.var_names)
        delta = np.abs(stats[c][0] - ctrl)
        inside = sim.var_names.isin(top)
        assert delta[inside].min() >= delta[~inside].max() - 1e-4


def test_condition_set(sim):
    info = sim.uns["omicformer_dataset"]
    labels = sim.obs["condition"].astype(str)
    parsed = {c: parse_condition(c) for c in labels.unique()}
    singles = {c: g for c, g in parsed.items() if len(g) == 1}
    doubles = {c: g for c, g in parsed.items() if len(g) == 2}
    assert len(parsed) == 1 + 50 + 50
    assert len(singles) == 50 and len(doubles) == 50
    assert all(c.endswith("+ctrl") for c in singles)
    single_genes = {g[0] for g in singles.values()}
    assert all(set(g) <= single_genes for g in doubles.values())
    assert len({frozenset(g) for g in doubles.values()}) == 50
    assert single_genes == set(info["perturbed_genes"])
    assert single_genes <= set(sim.var_names)
    assert abs((labels == "ctrl").mean() - 1 / 6) < 0.01
    sizes = labels[labels != "ctrl"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    eff = np.asarray(info["knockdown_efficiency"])
    assert len(eff) == 50 and eff.min() >= 0.05 and eff.max() <= 0.3
    # mostly regulators (genes with targets), a few without
    is_reg = np.isin(np.arange(200), info["grn"]["regulator"])
    pert_idx = sim.var_names.get_indexer(info["perturbed_genes"])
    assert 0.6 <= is_reg[pert_idx].mean() < 1


def test_vocab_coverage(sim, default_vocab):
    outside = ~sim.var_names.isin(list(default_vocab))
    assert outside.sum() == 10  # 5% of 200
    np.testing.assert_array_equal(
        ~outside, sim.uns["omicformer_dataset"]["grn"]["in_default_vocab"]
    )
    with gzip.open(SCGPT_DATA / "default_census_vocab.json.gz", "rt", encoding="utf-8") as fh:
        census = json.load(fh)
    for gene in sim.var_names[outside]:
        assert gene in census and not gene.startswith("ENSG") and "." not in gene
    # perturbed genes are all in the vocabulary
    assert set(sim.uns["omicformer_dataset"]["perturbed_genes"]) <= default_vocab


def test_perturbed_gene_knocked_down(sim, stats):
    ctrl_mean, ctrl_var, _ = stats["ctrl"]
    checked = 0
    for gene in sim.uns["omicformer_dataset"]["perturbed_genes"]:
        j = sim.var_names.get_loc(gene)
        if ctrl_mean[j] < 0.5:  # non-trivial expression
            continue
        checked += 1
        mean, var, _ = stats[f"{gene}+ctrl"]
        assert (mean[j] - ctrl_mean[j]) / np.sqrt(var[j] + ctrl_var[j]) < -3, gene
    assert checked >= 20


def test_targets_follow_edge_sign(sim, stats):
    info = sim.uns["omicformer_dataset"]
    grn = info["grn"]
    reg, tgt, sign = (np.asarray(grn[k]) for k in ("regulator", "target", "sign"))
    n_parents = np.bincount(tgt, minlength=sim.n_vars)
    program = set(info["program_genes"])
    ctrl_mean, ctrl_var, _ = stats["ctrl"]
    perturbed = set(info["perturbed_genes"])
    checked = 0
    for r, t, s in zip(reg, tgt, sign, strict=True):
        r_name, t_name = sim.var_names[r], sim.var_names[t]
        if r_name not in perturbed or n_parents[t] != 1 or t_name in program:
            continue
        mean, var, _ = stats[f"{r_name}+ctrl"]
        delta = mean[t] - ctrl_mean[t]
        z = delta / np.sqrt(var[t] + ctrl_var[t])
        if abs(z) > 4:
            checked += 1
            # knocking down an activator lowers its target, a repressor's target goes up
            assert np.sign(delta) == -s, (r_name, t_name)
    assert checked >= 10


def test_double_interactions_exist(sim, stats):
    ctrl_mean, ctrl_var, _ = stats["ctrl"]
    expressed = ctrl_mean > 0.5
    z_max = []
    for c in stats:
        genes = parse_condition(c)
        if len(genes) != 2:
            continue
        a, b = (stats[f"{g}+ctrl"] for g in genes)
        ab = stats[c]
        residual = (ab[0] - ctrl_mean) - (a[0] - ctrl_mean) - (b[0] - ctrl_mean)
        se = np.sqrt(ab[1] + a[1] + b[1] + ctrl_var)
        keep = expressed & ~sim.var_names.isin(genes)
        z_max.append(np.max(np.abs(residual[keep]) / se[keep]))
    assert len(z_max) == 50
    # far beyond sampling noise (|z| > 5 is ~1e-6 per gene): the additive model is not exact
    assert max(z_max) > 6.5
    assert sum(z > 5 for z in z_max) >= 2


def test_shared_response_program(sim, stats):
    info = sim.uns["omicformer_dataset"]
    ctrl = stats["ctrl"][0]
    idx = sim.var_names.get_indexer(info["program_genes"])
    deltas = np.array([stats[c][0][idx] - ctrl[idx] for c in stats if c != "ctrl"])
    # every program gene moves in its recorded direction in most perturbations
    agree = (np.sign(deltas) == np.asarray(info["program_sign"])).mean(axis=0)
    assert len(idx) >= 2 and agree.min() > 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_genes": 10}, "n_genes"),
        ({"n_singles": 5, "n_doubles": 11}, "pairs"),
        ({"n_cells": 60}, "too small"),
        ({"n_singles": 0}, "n_singles"),
        ({"n_genes": 20, "n_singles": 19, "n_doubles": 0}, "too large"),
        ({"n_cells": 6000.0}, "n_cells=6000.0 must be an integer"),
        ({"n_doubles": -1}, "n_doubles=-1 must be an integer >= 0"),
        # the seed is checked before any work (None failed after the whole simulation, a
        # bool was taken as 0 / 1)
        ({"random_state": None}, "random_state=None must be an integer >= 0"),
        ({"random_state": True}, "random_state=True must be an integer >= 0"),
        ({"random_state": -1}, "random_state=-1 must be an integer >= 0"),
        ({"random_state": 1.5}, "random_state=1.5 must be an integer >= 0"),
        # 95% of the genes come from a list of 4,000: 4,211 - round(0.05 * 4,211) = 4,000
        ({"n_cells": 120, "n_genes": 4212}, r"n_genes=4212 is too large.*at most 4,211"),
    ],
)
def test_simulation_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.perturbseq_simulation(**kwargs)


def test_simulation_largest_gene_count():
    adata = datasets.perturbseq_simulation(n_cells=30, n_genes=4211, n_singles=3, n_doubles=1)
    assert adata.shape == (30, 4211)
    assert adata.var_names.is_unique
