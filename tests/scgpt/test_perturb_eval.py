"""Perturbation metrics, baselines and plot, against expectations worked out by hand."""

from __future__ import annotations

import re

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure

from omicformer.scgpt import pl
from omicformer.scgpt._perturb_baselines import perturbation_baseline
from omicformer.scgpt._perturb_eval import evaluate_perturbation

GENES = ["A", "B", "C", "D", "E"]
# cells of each condition; means and deltas against CTRL written out below
CELLS = {
    "ctrl": [[1, 2, 3, 4, 2], [3, 2, 1, 4, 0]],
    "A+ctrl": [[0, 3, 2, 6, 1], [2, 3, 4, 6, 3]],
    "B+ctrl": [[2, 0, 5, 3, 1]],
    "A+B": [[1, 1, 6, 5, 4], [1, 1, 4, 7, 0], [1, 1, 5, 6, 2]],
}
CTRL = np.array([2, 2, 2, 4, 1.0])
MEAN = {
    "A+ctrl": np.array([1, 3, 3, 6, 2.0]),  # delta [-1, 1, 1, 2, 1]
    "B+ctrl": np.array([2, 0, 5, 3, 1.0]),  # delta [0, -2, 3, -1, 0]
    "A+B": np.array([1, 1, 5, 6, 2.0]),  # delta [-1, -1, 3, 2, 1]
}
# top-3 |delta|, perturbed genes excluded, ties in gene order
DE3 = {"A+ctrl": [3, 1, 2], "B+ctrl": [2, 3, 0], "A+B": [2, 3, 4]}
N_CELLS = {"A+ctrl": 2, "B+ctrl": 1, "A+B": 3}


def _make(cells: dict, genes: list[str], labels: dict | None = None) -> ad.AnnData:
    rows, conds = [], []
    for cond, xs in cells.items():
        for j, x in enumerate(xs):
            rows.append(x)
            conds.append(labels[cond][j] if labels and cond in labels else cond)
    obs = pd.DataFrame({"condition": conds}, index=[f"c{i}" for i in range(len(conds))])
    return ad.AnnData(
        np.array(rows, dtype=np.float32), obs=obs, var=pd.DataFrame(index=list(genes))
    )


@pytest.fixture(scope="module")
def truth() -> ad.AnnData:
    # A+B written both ways: one perturbation, its cells pooled (not the mean of the two means)
    adata = _make(CELLS, GENES, labels={"A+B": ["A+B", "B+A", "B+A"]})
    adata.uns["perturbation"] = {
        "conditions": pd.DataFrame(
            {"subgroup": ["control", "train", "unseen_single", "combo_seen2"]},
            index=["ctrl", "A+ctrl", "ctrl+B", "A+B"],
        )
    }
    return adata


def _pred(rows: dict[str, list[float]], genes=GENES) -> ad.AnnData:
    names = list(rows)
    return ad.AnnData(
        np.array([rows[n] for n in names], dtype=np.float32),
        obs=pd.DataFrame({"condition": names}, index=names),
        var=pd.DataFrame(index=list(genes)),
    )


PRED_ROWS = {
    "B+A": [1.5, 1.0, 4.0, 5.0, 1.0],  # delta [-0.5, -1, 2, 1, 0]
    "A+ctrl": [1.0, 2.5, 1.5, 5.0, 3.0],  # delta [-1, 0.5, -0.5, 1, 2]
    "B+ctrl": list(CTRL),  # no change
}
TRUTH_OF = {"B+A": "A+B", "A+ctrl": "A+ctrl", "B+ctrl": "B+ctrl"}


def _corr(x, y) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _same_anndata(a: ad.AnnData, b: ad.AnnData) -> None:
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert list(a.uns) == list(b.uns)


# ---------------------------------------------------------------- evaluate_perturbation
def test_evaluate_metrics_by_hand(truth):
    before = truth.copy()
    res = evaluate_perturbation(_pred(PRED_ROWS), truth, n_de=3)
    _same_anndata(truth, before)
    assert list(res.index) == ["B+A", "A+ctrl", "B+ctrl", "mean"]
    assert list(res.columns[:6]) == [
        "pearson", "pearson_delta", "pearson_de", "pearson_de_delta", "mse_de", "direction_de",
    ]  # fmt: skip
    for cond, row in PRED_ROWS.items():
        p, t = np.array(row), MEAN[TRUTH_OF[cond]]
        de = DE3[TRUTH_OF[cond]]
        r = res.loc[cond]
        assert r["pearson"] == pytest.approx(_corr(t, p))
        assert r["n_cells"] == N_CELLS[TRUTH_OF[cond]]
        assert r["n_genes"] == (2 if cond == "B+A" else 1)
        if cond != "B+ctrl":
            assert r["pearson_delta"] == pytest.approx(_corr(t - CTRL, p - CTRL))
            assert r["pearson_de_delta"] == pytest.approx(_corr(t[de] - CTRL[de], p[de] - CTRL[de]))
        assert r["pearson_de"] == pytest.approx(_corr(t[de], p[de]))
        assert r["mse_de"] == pytest.approx(np.mean((p[de] - t[de]) ** 2))
    # worked out by hand
    ab = res.loc["B+A"]  # DE C, D, E: true delta [3, 2, 1], predicted [2, 1, 0]
    assert ab["pearson_de_delta"] == pytest.approx(1.0)
    assert ab["mse_de"] == pytest.approx(1.0)
    assert ab["direction_de"] == pytest.approx(2 / 3)  # E: predicted 0, true 1 -> wrong
    a = res.loc["A+ctrl"]  # DE D, B, C: true [2, 1, 1], predicted [1, 0.5, -0.5]
    assert a["direction_de"] == pytest.approx(2 / 3)
    assert a["pearson_de_delta"] == pytest.approx(_corr([2, 1, 1], [1, 0.5, -0.5]))
    b = res.loc["B+ctrl"]  # no-change prediction: constant delta -> Pearson 0.0
    assert b["pearson_delta"] == 0.0
    assert b["pearson_de_delta"] == 0.0
    assert b["mse_de"] == pytest.approx((9 + 1 + 0) / 3)  # DE C, D, A
    assert b["direction_de"] == pytest.approx(1 / 3)  # A: true 0, predicted 0 -> right
    # subgroup looked up order-free ("ctrl+B" is "B+ctrl", "A+B" is "B+A")
    assert res.loc["B+A", "subgroup"] == "combo_seen2"
    assert res.loc["B+ctrl", "subgroup"] == "unseen_single"
    # last row: means of the metrics; counts missing there
    metrics = ["pearson", "pearson_delta", "pearson_de", "pearson_de_delta", "mse_de"]
    for col in [*metrics, "direction_de"]:
        assert res.loc["mean", col] == pytest.approx(res[col].iloc[:3].mean())
    assert pd.isna(res.loc["mean", "n_cells"])


def test_evaluate_de_genes_and_subgroup_absent(truth):
    plain = truth.copy()
    plain.uns["screen"] = plain.uns.pop("perturbation")  # prepare_perturbation(key_added=...)
    res = evaluate_perturbation(_pred(PRED_ROWS), plain, n_de=1)
    assert "subgroup" not in res.columns
    keyed = evaluate_perturbation(_pred(PRED_ROWS), plain, n_de=1, perturbation_key="screen")
    assert keyed.loc["B+A", "subgroup"] == "combo_seen2"
    # n_de=1: "A+ctrl" -> D only, "B+ctrl" -> C only; one gene: Pearson 0.0 by convention
    assert res.loc["A+ctrl", "mse_de"] == pytest.approx((5 - 6) ** 2)
    assert res.loc["B+ctrl", "mse_de"] == pytest.approx((2 - 5) ** 2)
    assert res.loc["A+ctrl", "pearson_de"] == 0.0
    # n_de larger than the genes: all unperturbed genes
    big = evaluate_perturbation(_pred(PRED_ROWS), plain, n_de=50)
    p, t = np.array(PRED_ROWS["B+A"]), MEAN["A+B"]
    assert big.loc["B+A", "mse_de"] == pytest.approx(np.mean((p[2:] - t[2:]) ** 2))


def test_evaluate_gene_order_layer_sparse_gene_key(truth):
    base = evaluate_perturbation(_pred(PRED_ROWS), truth, n_de=3)
    rev = {k: v[::-1] for k, v in PRED_ROWS.items()}
    pd.testing.assert_frame_equal(
        evaluate_perturbation(_pred(rev, GENES[::-1]), truth, n_de=3), base
    )

    other = truth.copy()
    other.layers["logn"] = sp.csr_matrix(other.X)
    other.X = np.zeros_like(other.X)
    got = evaluate_perturbation(_pred(PRED_ROWS), other, n_de=3, layer="logn")
    pd.testing.assert_frame_equal(got, base)

    # symbols in var["symbol"], var_names something else
    ids = [f"ENSG{i}" for i in range(5)]
    sym = truth.copy()
    sym.var = pd.DataFrame({"symbol": GENES}, index=ids)
    got = evaluate_perturbation(_pred(PRED_ROWS, ids), sym, n_de=3, gene_key="symbol")
    pd.testing.assert_frame_equal(got, base)


def test_evaluate_errors(truth):
    pred = _pred(PRED_ROWS)
    with pytest.raises(KeyError, match=r"\['C\+ctrl'\]"):
        evaluate_perturbation(_pred({"C+ctrl": list(CTRL)}), truth)
    no_ctrl = truth[truth.obs["condition"] != "ctrl"].copy()
    with pytest.raises(ValueError, match="No control cells"):
        evaluate_perturbation(pred, no_ctrl)
    with pytest.raises(KeyError, match="condition_key='cond'"):
        evaluate_perturbation(pred, truth, condition_key="cond")
    with pytest.raises(KeyError, match=r"missing from pred: \['E'\]"):
        evaluate_perturbation(_pred({"A+ctrl": [1, 2, 3, 4]}, GENES[:4]), truth)
    with pytest.raises(KeyError, match=r"not in the truth: \['F'\]"):
        evaluate_perturbation(_pred({"A+ctrl": [1, 2, 3, 4, 5, 6]}, [*GENES, "F"]), truth)
    with pytest.raises(ValueError, match="control"):
        evaluate_perturbation(_pred({"ctrl": list(CTRL)}), truth)
    with pytest.raises(ValueError, match="do not parse"):
        evaluate_perturbation(_pred({"A++B": list(CTRL)}), truth)
    with pytest.raises(ValueError, match="n_de=0"):
        evaluate_perturbation(pred, truth, n_de=0)
    bad = pred.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_perturbation(bad, truth)
    dup = ad.concat([pred[:1], pred[:1]], index_unique="-")
    with pytest.raises(ValueError, match="more than once"):
        evaluate_perturbation(dup, truth)
    # one double in either gene order is one perturbation
    assert "A+B" in truth.obs["condition"].to_numpy()
    both = _pred({"A+B": list(CTRL), "B+A": list(CTRL)})
    with pytest.raises(ValueError, match=r"more than once: \[\['A\+B', 'B\+A'\]\]"):
        evaluate_perturbation(both, truth)
    repeated = truth.copy()
    repeated.var_names = [*GENES[:-1], GENES[0]]
    with pytest.raises(ValueError, match="truth's var_names are not unique"):
        evaluate_perturbation(_pred(PRED_ROWS, [*GENES[:-1], "Z"]), repeated)


def test_constant_prediction_despite_float32_rounding():
    # control mean 1/3, 1/3, 2/3: not representable in float32
    cells = {"ctrl": [[1, 0, 0], [0, 1, 0], [0, 0, 2]], "X+ctrl": [[2, 1, 0], [0, 1, 1]]}
    data = _make(cells, ["X", "Y", "Z"])
    pred = perturbation_baseline(data, ["X+ctrl"], method="no_change")
    c = np.array([1 / 3, 1 / 3, 2 / 3])
    assert np.any(pred.X[0].astype(np.float64) != c)  # the rounding is there
    res = evaluate_perturbation(pred, data, n_de=2)
    r = res.loc["X+ctrl"]
    assert r["pearson_delta"] == 0.0
    assert r["pearson_de_delta"] == 0.0
    assert r["direction_de"] == 0.0  # true changes +2/3, -1/6; predicted 0
    assert r["pearson"] == pytest.approx(_corr([1, 1, 0.5], c), abs=1e-6)
    # a prediction constant over genes
    flat = _pred({"X+ctrl": [3.0, 3.0, 3.0]}, ["X", "Y", "Z"])
    assert evaluate_perturbation(flat, data, n_de=2).loc["X+ctrl", "pearson"] == 0.0


# ---------------------------------------------------------------- baselines
REQUEST = ["B+A", "A+ctrl", "ctrl+C", "A+C"]


def test_baseline_layout_no_change_and_mean(truth):
    before = truth.copy()
    pred = perturbation_baseline(truth, REQUEST, method="no_change")
    _same_anndata(truth, before)
    assert list(pred.obs_names) == REQUEST
    assert list(pred.obs["condition"]) == REQUEST
    assert pred.X.dtype == np.float32
    assert not sp.issparse(pred.X)
    np.testing.assert_allclose(pred.X, np.tile(CTRL, (4, 1)))
    np.testing.assert_allclose(pred.layers["delta"], 0.0)
    pd.testing.assert_frame_equal(pred.var, truth.var)
    info = pred.uns["perturbation_prediction"]
    params = {"method": "no_change", "condition_key": "condition", "control": "ctrl",
              "layer": None, "gene_key": None, "n_components": 10, "ridge": 0.1}  # fmt: skip
    assert info == {"method": "no_change", "control": "ctrl", "condition_key": "condition",
                    "n_train_conditions": 3, "params": params}  # fmt: skip

    # mean: three training perturbations ("A+B" and "B+A" are one), each weighted equally
    pred = perturbation_baseline(truth, REQUEST, method="mean")
    shift = np.array([-2 / 3, -2 / 3, 7 / 3, 1, 2 / 3])
    np.testing.assert_allclose(pred.X, np.tile(CTRL + shift, (4, 1)), rtol=1e-6)
    np.testing.assert_allclose(pred.layers["delta"], np.tile(shift, (4, 1)), rtol=1e-6)
    assert pred.uns["perturbation_prediction"]["n_train_conditions"] == 3


def test_baseline_additive(truth):
    pred = perturbation_baseline(truth, REQUEST, method="additive")
    expected = {
        "B+A": [1, 1, 6, 5, 2],  # ctrl + delta A + delta B
        "A+ctrl": [1, 3, 3, 6, 2],  # the measured single
        "ctrl+C": [2, 2, 2, 4, 1],  # no single of C: no change
        "A+C": [1, 3, 3, 6, 2],
    }
    np.testing.assert_allclose(pred.X, np.array(list(expected.values())), rtol=1e-6)
    np.testing.assert_allclose(pred.layers["delta"], pred.X - CTRL, atol=1e-6)
    assert pred.uns["perturbation_prediction"]["genes_without_single"] == ["C"]


def _linear_reference(train: dict, requested: list[tuple], k: int, lam: float) -> np.ndarray:
    """The model of Ahlmann-Eltze et al. written out: Y ~ b + G W P^T."""
    names = list(train)
    Y = np.column_stack([train[n] for n in names])
    b = Y.mean(axis=1)
    G = np.linalg.svd(Y - b[:, None])[0][:, :k]

    def onehot(gs):
        return np.array([g in gs for g in GENES], dtype=float)

    P = np.stack([onehot(n) for n in names]) @ G
    eye = np.eye(k)
    W = np.linalg.solve(G.T @ G + lam * eye, G.T @ (Y - b[:, None]) @ P)
    W = np.linalg.solve((P.T @ P + lam * eye).T, W.T).T  # right-multiply by the inverse
    return np.stack([b + G @ W @ (onehot(gs) @ G) for gs in requested])


def test_baseline_linear_closed_form(truth):
    train = {("A",): MEAN["A+ctrl"], ("B",): MEAN["B+ctrl"], ("A", "B"): MEAN["A+B"]}
    req = [("B", "A"), ("A",), ("C",), ("A", "C")]
    for n_components, k in ((10, 2), (1, 1)):
        pred = perturbation_baseline(truth, REQUEST, method="linear", n_components=n_components)
        np.testing.assert_allclose(pred.X, _linear_reference(train, req, k, 0.1), atol=1e-5)
        info = pred.uns["perturbation_prediction"]
        assert info["n_components"] == k
        assert info["ridge"] == 0.1
        assert info["n_train_conditions"] == 3
        assert info["unmeasured_train_conditions"] == []
    # a training perturbation of an unmeasured gene cannot be embedded: left out, listed
    extra = ad.concat([truth, _make({"Z+ctrl": [[9, 9, 9, 9, 9]]}, GENES)], index_unique="-")
    pred = perturbation_baseline(extra, REQUEST, method="linear")
    np.testing.assert_allclose(pred.X, _linear_reference(train, req, 2, 0.1), atol=1e-5)
    info = pred.uns["perturbation_prediction"]
    assert info["unmeasured_train_conditions"] == ["Z+ctrl"]
    assert info["n_train_conditions"] == 3


def test_baseline_linear_recovers_low_rank_truth():
    # Y = c + M A M[g]^T for the single of gene g, M orthonormal (genes x 2) with zero mean over
    # the training genes: noise-free data of the model, so held-out genes are predicted exactly
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(8)]
    M = rng.normal(size=(8, 2))
    M[:6] -= M[:6].mean(axis=0)
    M = np.linalg.qr(M)[0]
    assert np.allclose(M[:6].mean(axis=0), 0)
    A = np.array([[2.0, 0.5], [-0.3, 1.5]])
    c = 5 + rng.uniform(size=8)

    def effect(gs):
        return c + M @ A @ M[[genes.index(g) for g in gs]].sum(axis=0)

    cells = {"ctrl": [c, c]}
    for g in genes[:6]:
        cells[f"{g}+ctrl"] = [effect([g])] * 2
    data = _make(cells, genes)
    held_out = ["g6+ctrl", "g7+ctrl", "g7+g6"]
    pred = perturbation_baseline(data, held_out, method="linear", n_components=2, ridge=1e-9)
    expected = [effect(["g6"]), effect(["g7"]), effect(["g6", "g7"])]
    np.testing.assert_allclose(pred.X, np.array(expected), atol=2e-4)
    # the additive baseline cannot: g6 and g7 have no measured single
    add = perturbation_baseline(data, held_out, method="additive")
    np.testing.assert_allclose(add.X, np.tile(c, (3, 1)), atol=1e-5)


def test_baseline_backed_and_gene_key(truth, tmp_path):
    path = tmp_path / "train.h5ad"
    plain = truth.copy()
    del plain.uns["perturbation"]
    plain.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        for method in ("additive", "linear"):
            a = perturbation_baseline(backed, REQUEST, method=method)
            b = perturbation_baseline(truth, REQUEST, method=method)
            np.testing.assert_allclose(a.X, b.X, atol=1e-6)
    finally:
        backed.file.close()
    sym = truth.copy()
    sym.var = pd.DataFrame({"symbol": GENES}, index=[f"ENSG{i}" for i in range(5)])
    got = perturbation_baseline(sym, REQUEST, method="additive", gene_key="symbol")
    np.testing.assert_allclose(got.X, perturbation_baseline(truth, REQUEST, method="additive").X)
    assert list(got.var_names) == list(sym.var_names)


def test_baseline_evaluated(truth):
    pred = perturbation_baseline(truth, ["A+B", "B+ctrl"], method="additive")
    res = evaluate_perturbation(pred, truth, n_de=3)
    p = np.array([1, 1, 6, 5, 2.0])
    assert res.loc["A+B", "pearson_delta"] == pytest.approx(_corr(MEAN["A+B"] - CTRL, p - CTRL))
    assert res.loc["B+ctrl", "pearson"] == pytest.approx(1.0)  # the measured single itself


def test_baseline_errors(truth):
    with pytest.raises(ValueError, match=r"ridge='1' must be a finite number"):
        perturbation_baseline(truth, ["A+ctrl"], method="linear", ridge="1")
    with pytest.raises(ValueError, match=r"method='foo'.*'no_change'.*'linear'"):
        perturbation_baseline(truth, ["A+ctrl"], method="foo")
    with pytest.raises(KeyError, match="condition_key='cond'"):
        perturbation_baseline(truth, ["A+ctrl"], condition_key="cond")
    bad = truth.copy()
    bad.obs["condition"] = bad.obs["condition"].replace("B+ctrl", "A++B")
    with pytest.raises(ValueError, match=r"do not parse: 'A\+\+B'"):
        perturbation_baseline(bad, ["A+ctrl"])
    with pytest.raises(ValueError, match=r"do not parse: 'A\+'"):
        perturbation_baseline(truth, ["A+"])
    no_ctrl = truth[truth.obs["condition"] != "ctrl"].copy()
    with pytest.raises(ValueError, match="No control cells"):
        perturbation_baseline(no_ctrl, ["A+ctrl"])
    with pytest.raises(KeyError, match=r"not in the genes of adata: 'a' \(did you mean 'A'\?\)"):
        perturbation_baseline(truth, ["a+ctrl"])
    one = truth[truth.obs["condition"].isin(["ctrl", "A+ctrl"])].copy()
    with pytest.raises(ValueError, match="at least 2 training perturbations"):
        perturbation_baseline(one, ["B+ctrl"], method="linear")
    only_ctrl = truth[truth.obs["condition"] == "ctrl"].copy()
    with pytest.raises(ValueError, match="control cells only"):
        perturbation_baseline(only_ctrl, ["B+ctrl"], method="mean")
    with pytest.raises(ValueError, match="empty"):
        perturbation_baseline(truth, [])
    for twice in (["A+ctrl", "A+ctrl"], ["A+ctrl", "ctrl+A"], ["A+B", "B+A"]):  # two rows before
        with pytest.raises(ValueError, match=re.escape(f"asks for '{twice[1]}' twice")):
            perturbation_baseline(truth, twice, method="additive")
    with pytest.raises(ValueError, match=r"asks for 'A\+ctrl' twice; keep one"):
        perturbation_baseline(truth, ["A+ctrl", "A+ctrl"])
    repeated = truth.copy()
    repeated.var_names = [*GENES[:-1], GENES[0]]
    with pytest.raises(ValueError, match="must be unique"):
        perturbation_baseline(repeated, ["A+ctrl"])
    with pytest.raises(ValueError, match="not a perturbation"):
        perturbation_baseline(truth, ["ctrl"])
    with pytest.raises(ValueError, match="n_components=0"):
        perturbation_baseline(truth, ["A+ctrl"], method="linear", n_components=0)
    with pytest.raises(ValueError, match="ridge=-1"):
        perturbation_baseline(truth, ["A+ctrl"], method="linear", ridge=-1)
    # a single string is one perturbation
    assert list(perturbation_baseline(truth, "A+ctrl").obs_names) == ["A+ctrl"]


# ---------------------------------------------------------------- plot
def test_plot_single_prediction(truth, tmp_path):
    path = tmp_path / "figs" / "pert.png"
    fig = pl.perturbation(
        _pred(PRED_ROWS), truth, ["A+B", "A+ctrl", "B+ctrl"], n_de=3, show=False, save=path
    )
    assert isinstance(fig, Figure)
    assert path.is_file()
    assert len(fig.axes) == 3  # 2 x 2 grid, the empty slot removed
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["C", "D", "E"]
    # predicted change of "B+A" on C, D, E
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], [2, 1, 0])
    # observed per-cell changes: C [4, 2, 3], D [1, 3, 2], E [3, -1, 1] -> medians 3, 2, 1
    medians = [ln.get_ydata()[0] for ln in ax.lines if len(ln.get_ydata()) == 2]
    for m in (3.0, 2.0, 1.0):
        assert any(np.isclose(v, m) for v in medians)
    assert any(ln.get_linestyle() == "--" for ln in ax.lines)
    assert ax.get_title() == "A+B\npearson_de_delta = 1.000"
    assert fig.axes[2].get_title().startswith("B+ctrl\npearson_de_delta = 0.000")
    plt.close("all")


def test_plot_methods_side_by_side(truth):
    preds = {
        "additive": perturbation_baseline(truth, ["A+B", "B+ctrl"], method="additive"),
        "mean": perturbation_baseline(truth, ["B+ctrl", "B+A"], method="mean"),
    }
    fig = pl.perturbation(preds, truth, n_de=3, ncols=3, show=False)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_title().startswith("A+B\npearson_de_delta (additive)")
    assert len(ax.collections) == 2
    shift = np.array([-2 / 3, -2 / 3, 7 / 3, 1, 2 / 3])
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], [4, 1, 1], atol=1e-5)
    np.testing.assert_allclose(ax.collections[1].get_offsets()[:, 1], shift[[2, 3, 4]], atol=1e-5)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["observed (cells)", "additive", "mean"]
    plt.close("all")


def test_plot_errors(truth):
    pred = _pred(PRED_ROWS)
    with pytest.raises(KeyError, match=r"\['C\+ctrl'\] not in the prediction 'prediction'"):
        pl.perturbation(pred, truth, ["C+ctrl"], show=False)
    with pytest.raises(ValueError, match="empty dict"):
        pl.perturbation({}, truth, show=False)
    with pytest.raises(ValueError, match="ncols=0"):
        pl.perturbation(pred, truth, ncols=0, show=False)
    with pytest.raises(ValueError, match=r"conditions names the control \['ctrl'\]"):
        pl.perturbation(pred, truth, ["A+ctrl", "ctrl"], show=False)
    many = _pred({f"G{i}+ctrl": list(CTRL) for i in range(9)})
    with pytest.warns(UserWarning, match="first 8 of 9"), pytest.raises(KeyError, match="G0"):
        pl.perturbation(many, truth, show=False)
    plt.close("all")
