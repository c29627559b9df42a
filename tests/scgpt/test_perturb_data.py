"""pp.prepare_perturbation: control mean, DE genes and the GEARS split.

Expectations are computed here independently of the code under test: hand-written means and DE
genes, set properties of the GEARS split rule, and numpy re-computations on simulated data.
"""

from __future__ import annotations

import itertools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer.scgpt import pp

pytestmark = pytest.mark.usefixtures("one_thread")


def _genes_of(condition: str, control: str = "ctrl") -> list[str]:
    """Perturbed genes of a condition string, parsed here by hand."""
    return [g for g in condition.split("+") if g != control]


def _anndata(rows, conditions, genes, sparse=False) -> ad.AnnData:
    X = np.asarray(rows, dtype=np.float32)
    obs = pd.DataFrame({"condition": conditions}, index=[f"c{i}" for i in range(len(X))])
    return ad.AnnData(sp.csr_matrix(X) if sparse else X, obs=obs, var=pd.DataFrame(index=genes))


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# =============================================================================================
# pp.prepare_perturbation: a hand-computed example
# =============================================================================================
GENES = ["A", "B", "C", "D", "E", "F"]
HAND = {
    "ctrl": [[1, 0, 2, 4, 1, 0], [3, 2, 2, 0, 1, 0]],  # mean [2, 1, 2, 2, 1, 0]
    "A+ctrl": [[0, 1, 5, 2, 1, 3], [0, 3, 5, 2, 3, 1]],  # delta [-2, 1, 3, 0, 1, 2]
    "A+B": [[0, 0, 2, 6, 1, 0]],  # delta [-2, -1, 0, 4, 0, 0]
    "ctrl+C": [[2, 1, 9, 2, 1, 0], [2, 1, 9, 2, 1, 0]],  # delta [0, 0, 7, 0, 0, 0]
}
HAND_CTRL_MEAN = [2.0, 1.0, 2.0, 2.0, 1.0, 0.0]
# top-3 |delta|, perturbed genes left out (A's |delta| 2 would tie F's), ties in gene order
HAND_DE3 = {"A+ctrl": ["C", "F", "B"], "A+B": ["D", "C", "E"], "ctrl+C": ["A", "B", "D"]}


def _hand(sparse=False, genes=GENES) -> ad.AnnData:
    cells = [(c, r) for c, rows in HAND.items() for r in rows]
    order = [3, 0, 6, 2, 5, 1, 4]  # conditions interleaved
    return _anndata([cells[i][1] for i in order], [cells[i][0] for i in order], genes, sparse)


@pytest.mark.parametrize("sparse", [False, True])
def test_prepare_control_mean_de_genes_and_table_by_hand(sparse):
    adata = _hand(sparse)
    pp.prepare_perturbation(adata, n_de=3, split=None)
    res = adata.uns["perturbation"]
    assert res["control_mean"].dtype == np.float32
    np.testing.assert_array_equal(res["control_mean"], HAND_CTRL_MEAN)
    assert {c: list(g) for c, g in res["de_genes"].items()} == HAND_DE3
    t = res["conditions"]
    assert list(t.index) == ["ctrl", "A+B", "A+ctrl", "ctrl+C"]
    assert t["n_cells"].tolist() == [2, 1, 2, 2]
    assert t["genes"].tolist() == ["", "A+B", "A", "C"]
    assert t["n_genes"].tolist() == [0, 2, 1, 1]
    assert t["split"].tolist() == ["train"] * 4
    assert t["subgroup"].tolist() == ["control", "train", "train", "train"]
    assert res["params"]["split"] == "none" and res["params"]["n_de"] == 3
    assert adata.obs["perturbation_split"].tolist() == ["train"] * adata.n_obs


def test_de_genes_of_one_perturbation_spelled_two_ways_pool_its_cells():
    """As evaluate_perturbation scores them: one perturbation, one set of DE genes."""
    adata = _hand()
    assert adata.obs["condition"].iloc[0] == "A+ctrl"  # its row [0, 3, 5, 2, 3, 1]
    adata.obs.iloc[0, adata.obs.columns.get_loc("condition")] = "ctrl+A"
    pp.prepare_perturbation(adata, n_de=3, split=None)
    de = adata.uns["perturbation"]["de_genes"]
    # the row alone: delta [-2, 2, 3, 0, 2, 1] -> C, B, E; both rows: HAND_DE3's C, F, B
    assert list(de["ctrl+A"]) == list(de["A+ctrl"]) == HAND_DE3["A+ctrl"]
    assert list(de["A+B"]) == HAND_DE3["A+B"]


def test_prepare_reads_layer_and_gene_key():
    adata = _hand(genes=[f"id{i}" for i in range(6)])
    adata.var["symbol"] = GENES
    adata.layers["logn"] = adata.X.copy()
    adata.X = np.zeros_like(adata.X)
    pp.prepare_perturbation(adata, layer="logn", gene_key="symbol", n_de=3, split=None,
                            key_added="pert")  # fmt: skip
    res = adata.uns["pert"]
    np.testing.assert_array_equal(res["control_mean"], HAND_CTRL_MEAN)
    # perturbed genes are matched by symbol; the stored DE genes are var_names
    ids = dict(zip(GENES, adata.var_names, strict=True))
    assert {c: list(g) for c, g in res["de_genes"].items()} == {
        c: [ids[g] for g in gs] for c, gs in HAND_DE3.items()
    }
    assert "pert_split" in adata.obs and "perturbation" not in adata.uns


def _expected_de(X, labels, var, condition, n):
    """Top-n |mean(condition) - mean(ctrl)|, perturbed genes left out, ties in gene order."""
    delta = X[labels == condition].mean(0) - X[labels == "ctrl"].mean(0)
    perturbed = set(_genes_of(condition))
    ranked = sorted((-abs(float(delta[j])), j) for j in range(len(var)) if var[j] not in perturbed)
    return [var[j] for _, j in ranked[:n]]


def test_prepare_on_simulated_data_matches_numpy(sim):
    adata = sim.copy()
    pp.prepare_perturbation(adata, n_de=5, split=None)
    X = sim.X.toarray().astype(np.float64)
    labels = sim.obs["condition"].astype(str).to_numpy()
    var = list(sim.var_names)
    res = adata.uns["perturbation"]
    np.testing.assert_allclose(res["control_mean"], X[labels == "ctrl"].mean(0), rtol=1e-6)
    perts = sorted(set(labels) - {"ctrl"})
    assert sorted(res["de_genes"]) == perts
    for c in perts:
        assert list(res["de_genes"][c]) == _expected_de(X, labels, var, c, 5), c
        assert not set(_genes_of(c)) & set(res["de_genes"][c])


# =============================================================================================
# GEARS splits
# =============================================================================================
SPLIT_SINGLES = [f"G{i}" for i in range(16)]
SPLIT_PAIRS = [(a, b) for a, b in itertools.combinations(range(16), 2) if (a + 2 * b) % 5 == 0]


def _split_data(extra=()) -> ad.AnnData:
    """16 singles, 24 doubles of them, 2 cells each, 6 controls; genes G0..G19."""
    conds = ["ctrl"] * 6 + [f"{g}+ctrl" for g in SPLIT_SINGLES]
    conds += [f"G{a}+G{b}" for a, b in SPLIT_PAIRS] + list(extra)
    labels = ["ctrl"] * 6 + [c for c in conds[6:] for _ in range(2)]
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 1.0, size=(len(labels), 20))
    return _anndata(X, labels, [f"G{i}" for i in range(20)])


def _table(adata, key="perturbation") -> pd.DataFrame:
    return adata.uns[key]["conditions"]


@pytest.mark.parametrize(("gene_frac", "seen2_frac"), [(0.75, 0.75), (0.5, 1.0)])
def test_simulation_split_follows_the_gears_rule(gene_frac, seen2_frac):
    adata = _split_data()
    pp.prepare_perturbation(adata, n_de=2, split="simulation", train_gene_fraction=gene_frac,
                            combo_seen2_train_fraction=seen2_frac, random_state=3)  # fmt: skip
    t = _table(adata).drop(index="ctrl")
    assert _table(adata).loc["ctrl", "split"] == "train"
    assert _table(adata).loc["ctrl", "subgroup"] == "control"
    split, sub = t["split"].to_dict(), t["subgroup"].to_dict()
    assert set(split.values()) <= {"train", "val", "test"}
    genes = {c: set(_genes_of(c)) for c in t.index}
    singles = [c for c in t.index if len(genes[c]) == 1]
    combos = [c for c in t.index if len(genes[c]) == 2]

    # training genes: those whose single is trained on (train or, moved out later, val)
    train_genes = {next(iter(genes[c])) for c in singles if split[c] in ("train", "val")}
    assert len(train_genes) == int(16 * gene_frac)
    for c in singles:
        assert sub[c] == ("unseen_single" if split[c] == "test" else split[c])
    # an unseen single's gene is never perturbed in train or val, alone or in a combination
    unseen_genes = {next(iter(genes[c])) for c in singles if split[c] == "test"}
    assert unseen_genes.isdisjoint(train_genes)
    for c in t.index:
        if split[c] in ("train", "val"):
            assert not genes[c] & unseen_genes, c
    # combo_seenK: K of its genes are training genes; only combo_seen2 pairs ever train
    for c in combos:
        k = len(genes[c] & train_genes)
        if split[c] == "test":
            assert sub[c] == f"combo_seen{k}", c
        else:
            assert k == 2 and sub[c] == split[c], c
    seen2 = [c for c in combos if genes[c] <= train_genes]
    trained = [c for c in seen2 if split[c] in ("train", "val")]
    assert len(trained) == int(len(seen2) * seen2_frac)
    assert sum(sub[c] == "combo_seen2" for c in combos) == len(seen2) - len(trained)
    # validation: the same rule (0.9, 0.9) inside the training conditions
    train_split_genes = {next(iter(genes[c])) for c in singles if split[c] == "train"}
    assert len(train_split_genes) == int(len(train_genes) * 0.9)
    for c in t.index:
        if split[c] == "val" and len(genes[c]) == 1:
            assert all(not genes[c] & genes[d] for d in t.index if split[d] == "train"), c
        if split[c] == "train":
            assert genes[c] <= train_split_genes, c

    # every cell carries its condition's split; no test/val condition has a training cell
    labels = adata.obs["condition"].astype(str)
    cell_split = adata.obs["perturbation_split"].astype(str)
    assert (cell_split == labels.map(_table(adata)["split"])).all()
    train_conds = set(labels[cell_split == "train"])
    assert train_conds.isdisjoint(c for c in t.index if split[c] in ("val", "test"))
    assert {"train", "val", "test"} <= set(cell_split)


def test_split_is_seeded():
    def split_of(seed):
        a = _split_data()
        pp.prepare_perturbation(a, n_de=2, random_state=seed)
        return _table(a)["split"], a.obs["perturbation_split"]

    s0, cells0 = split_of(0)
    s0b, cells0b = split_of(0)
    s1, _ = split_of(1)
    pd.testing.assert_series_equal(s0, s0b)
    pd.testing.assert_series_equal(cells0, cells0b)
    assert not s0.equals(s1)


def test_single_split_excludes_combinations():
    adata = _split_data()
    pp.prepare_perturbation(adata, n_de=2, split="single", random_state=0)
    t = _table(adata)
    combos = [f"G{a}+G{b}" for a, b in SPLIT_PAIRS]
    assert (t.loc[combos, "split"] == "excluded").all()
    assert (t.loc[combos, "subgroup"] == "excluded").all()
    singles = [f"{g}+ctrl" for g in SPLIT_SINGLES]
    assert set(t.loc[singles, "split"]) == {"train", "val", "test"}
    assert set(t.loc[singles, "subgroup"]) == {"train", "val", "unseen_single"}
    assert int((t.loc[singles, "split"] != "test").sum()) == int(16 * 0.75)
    is_combo = adata.obs["condition"].isin(combos)
    assert (adata.obs.loc[is_combo, "perturbation_split"] == "excluded").all()
    assert (adata.obs.loc[~is_combo, "perturbation_split"] != "excluded").all()


def test_no_split_trains_everything():
    adata = _split_data()
    pp.prepare_perturbation(adata, n_de=2, split=None)
    t = _table(adata)
    assert (t["split"] == "train").all()
    assert (adata.obs["perturbation_split"] == "train").all()
    assert adata.uns["perturbation"]["params"]["split"] == "none"


def test_same_perturbation_in_either_order_gets_one_split():
    reversed_pairs = [f"G{b}+G{a}" for a, b in SPLIT_PAIRS[:8]]
    for seed in range(10):
        adata = _split_data(extra=reversed_pairs)
        pp.prepare_perturbation(adata, n_de=2, random_state=seed)
        t = _table(adata)
        for a, b in SPLIT_PAIRS[:8]:
            assert t.loc[f"G{a}+G{b}", "split"] == t.loc[f"G{b}+G{a}", "split"], (seed, a, b)


def test_prepare_copy_leaves_input_untouched(snapshot):
    adata = _split_data()
    snap = snapshot(adata)
    out = pp.prepare_perturbation(adata, n_de=2, copy=True)
    snap.assert_unchanged(adata)
    assert out is not adata and "perturbation" in out.uns and "perturbation_split" in out.obs
    assert pp.prepare_perturbation(adata, n_de=2) is None and "perturbation" in adata.uns


def test_prepare_refuses_backed_copy_and_backed_view(tmp_path):
    _split_data().write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="copy=True is not supported for backed AnnData"):
        pp.prepare_perturbation(backed, n_de=2, copy=True)
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        pp.prepare_perturbation(backed[: backed.n_obs // 2], n_de=2)
    assert "perturbation" not in backed.uns and "perturbation_split" not in backed.obs
    pp.prepare_perturbation(backed, n_de=2)  # in place: read in chunks
    assert "perturbation" in backed.uns and "perturbation_split" in backed.obs


def _negative():
    a = _hand()
    a.X[0, 1] = -0.5
    return a


def _unmeasured():
    a = _hand()
    a.obs["condition"] = a.obs["condition"].replace({"A+B": "A+Q"})
    return a


def _no_control():
    a = _hand()
    a.obs["condition"] = a.obs["condition"].replace({"ctrl": "NT"})
    return a


def _duplicated_gene():
    a = _hand()
    a.var_names = ["A", "B", "C", "D", "E", "A"]  # F renamed A: which column is gene A?
    return a


def _bad_string():
    a = _hand()
    a.obs["condition"] = a.obs["condition"].replace({"A+B": "A++B", "ctrl+C": "C+"})
    return a


def _joined():
    a = _hand()
    a.obs["condition"] = a.obs["condition"].replace({"A+B": "A_B"})
    return a


def test_prepare_warns_about_raw_counts():
    a = _hand()
    a.X = np.round(a.X * 40)  # whole numbers up to 40 and more: counts, not log1p values
    with pytest.warns(UserWarning, match="raw counts, it seems") as record:
        pp.prepare_perturbation(a, split=None)
    assert {w.filename for w in record} == {__file__}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.prepare_perturbation(_hand(), split=None)  # log-normalised values: no warning


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (_hand, {"condition_key": "perturbation"}, KeyError, "perturbation"),
        (
            _bad_string,
            {},
            ValueError,
            r"2 condition\(s\) do not parse: ('A\+\+B', 'C\+'|'C\+', 'A\+\+B')",
        ),
        (_no_control, {}, ValueError, "No control cells"),
        (_hand, {"control": "NT"}, ValueError, "No control cells"),
        (_negative, {}, ValueError, r"negative.*expects log-normalised expression"),
        (_unmeasured, {}, ValueError, r"not measured.*A\+Q"),
        (_duplicated_gene, {}, ValueError, r"var_names must be unique \(duplicated: \['A'\]\)"),
        (_hand, {"split": "random"}, ValueError, "split="),
        (_hand, {"train_gene_fraction": 0.0}, ValueError, "train_gene_fraction"),
        (_hand, {"n_de": 0}, ValueError, "n_de"),
        (_hand, {"n_de": 2.5}, ValueError, "n_de=2.5 must be an integer"),
        (_hand, {"random_state": None}, ValueError, "random_state=None must be an integer"),
        (_joined, {}, ValueError, r"join genes with '_' \(scPerturb\).*read_scperturb"),
    ],
)
def test_prepare_errors_leave_adata_unchanged(make, kwargs, error, match, snapshot):
    adata = make()
    snap = snapshot(adata)
    with pytest.raises(error, match=match):
        pp.prepare_perturbation(adata, **kwargs)
    snap.assert_unchanged(adata)
