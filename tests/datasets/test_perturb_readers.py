"""Readers of perturbation data (GEARS and scPerturb layouts) and the simulation script."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicformer import datasets

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "simulate_perturbseq.py"


# --- read_gears -------------------------------------------------------------------------------


def write_gears(folder: Path, *, obs_drop: str | None = None, var_drop: bool = False) -> Path:
    """A tiny dataset exactly in the layout of GEARS' perturb_processed.h5ad."""
    rng = np.random.default_rng(0)
    conditions = ["ctrl"] * 4 + ["KLF1+ctrl"] * 3 + ["KLF1+CEBPA"] * 3
    dose = ["1" if c == "ctrl" else "1+1" for c in conditions]
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(conditions),
            "cell_type": pd.Categorical(["K562"] * 10),
            "dose_val": pd.Categorical(dose),
            "control": np.array([int(c == "ctrl") for c in conditions]),
            "condition_name": pd.Categorical(
                [f"K562_{c}_{d}" for c, d in zip(conditions, dose, strict=True)]
            ),
        },
        index=[f"AAACCTG-{i}" for i in range(10)],
    )
    if obs_drop:
        obs = obs.drop(columns=obs_drop)
    ids = ["ENSG00000105610", "ENSG00000245848", "ENSG00000000001", "ENSG00000000002"]
    var = pd.DataFrame({"gene_name": ["KLF1", "CEBPA", "DUP", "DUP"]}, index=ids)
    if var_drop:
        var = var.drop(columns="gene_name")
    X = sp.csr_matrix(np.log1p(rng.poisson(3.0, (10, 4))).astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["rank_genes_groups_cov_all"] = {"K562_KLF1+ctrl_1+1": np.array(ids[:2])}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "perturb_processed.h5ad"
    adata.write_h5ad(path)
    return path


def test_read_gears_folder_and_file(tmp_path):
    path = write_gears(tmp_path / "norman")
    for source in (tmp_path / "norman", path, str(path)):
        adata = datasets.read_gears(source)
        assert list(adata.var_names) == ["KLF1", "CEBPA", "DUP", "DUP-1"]
        assert adata.var["gene_id"].tolist()[0] == "ENSG00000105610"
        assert adata.var["gene_name"].tolist() == ["KLF1", "CEBPA", "DUP", "DUP"]
        assert adata.X.dtype == np.float32 and sp.isspmatrix_csr(adata.X)
        assert adata.obs["condition"].astype(str).tolist()[3:5] == ["ctrl", "KLF1+ctrl"]
        assert "rank_genes_groups_cov_all" in adata.uns
        original = ad.read_h5ad(path)
        np.testing.assert_array_equal(adata.X.toarray(), original.X.toarray())


def test_read_gears_missing_or_blank_symbol_keeps_the_id(tmp_path):
    # var_names were "" and " " for blank symbols (and "-1" for a second blank one)
    obs = pd.DataFrame({"condition": ["ctrl", "KLF1+ctrl"]}, index=["a", "b"])
    ids = ["ENSG00000105610", "ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
    var = pd.DataFrame({"gene_name": ["KLF1", "", " ", None]}, index=ids)
    adata = ad.AnnData(X=np.ones((2, 4), dtype=np.float32), obs=obs, var=var)
    adata.write_h5ad(tmp_path / "perturb_processed.h5ad")
    out = datasets.read_gears(tmp_path)
    assert list(out.var_names) == ["KLF1", "ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
    assert out.var["gene_id"].tolist() == ids


def test_read_gears_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.read_gears(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "splits").mkdir()
    with pytest.raises(FileNotFoundError, match=r"perturb_processed\.h5ad.*splits"):
        datasets.read_gears(tmp_path / "empty")
    write_gears(tmp_path / "no_cond", obs_drop="condition")
    with pytest.raises(ValueError, match=r"no 'condition' column.*condition_name"):
        datasets.read_gears(tmp_path / "no_cond")
    write_gears(tmp_path / "no_name", var_drop=True)
    with pytest.raises(ValueError, match=r"no 'gene_name' column.*ENSG00000105610"):
        datasets.read_gears(tmp_path / "no_name")


# --- read_scperturb ---------------------------------------------------------------------------


def write_scperturb(path: Path, labels: list, *, dense: bool = False) -> np.ndarray:
    """A tiny file in the scPerturb layout; returns the raw counts."""
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, (len(labels), 5)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    obs = pd.DataFrame(
        {
            "perturbation": labels,
            "perturbation_type": "CRISPR",
            "nperts": [0 if v == "control" else str(v).count("_") + 1 for v in labels],
        },
        index=[f"c{i}" for i in range(len(labels))],
    )
    var = pd.DataFrame(index=["KLF1", "CEBPA", "GATA1", "TAL1", "SPI1"])
    X = counts if dense else sp.csr_matrix(counts)
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(path)
    return counts


@pytest.mark.parametrize("dense", [False, True])
def test_read_scperturb(tmp_path, dense, lognorm):
    labels = ["control", "KLF1", "KLF1_CEBPA", "control", "GATA1", "GATA1_TAL1_SPI1"]
    counts = write_scperturb(tmp_path / "screen.h5ad", labels, dense=dense)
    adata = datasets.read_scperturb(tmp_path / "screen.h5ad")
    assert adata.obs["condition"].astype(str).tolist() == [
        "ctrl",
        "KLF1+ctrl",
        "KLF1+CEBPA",
        "ctrl",
        "GATA1+ctrl",
        "GATA1+TAL1+SPI1",
    ]
    assert isinstance(adata.obs["condition"].dtype, pd.CategoricalDtype)
    assert adata.obs["perturbation"].tolist() == labels
    assert "nperts" in adata.obs
    stored = adata.layers["counts"]
    np.testing.assert_array_equal(stored.toarray() if sp.issparse(stored) else stored, counts)
    X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    assert X.dtype == np.float32 and sp.issparse(adata.X) != dense
    np.testing.assert_allclose(X, lognorm(counts), rtol=1e-6, atol=1e-6)
    assert list(adata.var_names) == ["KLF1", "CEBPA", "GATA1", "TAL1", "SPI1"]


def test_read_scperturb_keeps_a_measured_symbol_with_an_underscore_whole(tmp_path):
    labels = ["control", "KLF1_AS", "KLF1_AS_CEBPA", "KLF1_CEBPA", "GATA1_X"]
    write_scperturb(tmp_path / "s.h5ad", labels)
    adata = ad.read_h5ad(tmp_path / "s.h5ad")
    adata.var_names = ["KLF1", "CEBPA", "GATA1", "KLF1_AS", "SPI1"]
    adata.write_h5ad(tmp_path / "s.h5ad")
    out = datasets.read_scperturb(tmp_path / "s.h5ad")
    # a measured symbol stays whole; an unmeasured part ('X') is still its own gene
    assert out.obs["condition"].astype(str).tolist() == [
        "ctrl", "KLF1_AS+ctrl", "KLF1_AS+CEBPA", "KLF1+CEBPA", "GATA1+X"
    ]  # fmt: skip


def test_read_scperturb_custom_key_and_control(tmp_path):
    labels = ["non-targeting", "KLF1", "KLF1_CEBPA"]
    counts = write_scperturb(tmp_path / "s.h5ad", labels)
    adata = ad.read_h5ad(tmp_path / "s.h5ad")
    adata.obs = adata.obs.rename(columns={"perturbation": "condition"})
    adata.write_h5ad(tmp_path / "s.h5ad")
    out = datasets.read_scperturb(
        tmp_path / "s.h5ad", perturbation_key="condition", control="non-targeting"
    )
    assert out.obs["condition"].astype(str).tolist() == ["ctrl", "KLF1+ctrl", "KLF1+CEBPA"]
    assert out.obs["condition_scperturb"].tolist() == labels
    np.testing.assert_array_equal(out.layers["counts"].toarray(), counts)


def test_read_scperturb_keeps_a_condition_column_of_the_file(tmp_path):
    # a file whose obs also has its own 'condition' (here the stimulation): it was overwritten
    labels = ["control", "KLF1", "KLF1_CEBPA"]
    write_scperturb(tmp_path / "s.h5ad", labels)
    adata = ad.read_h5ad(tmp_path / "s.h5ad")
    adata.obs["condition"] = ["stim", "rest", "stim"]
    adata.write_h5ad(tmp_path / "s.h5ad")
    out = datasets.read_scperturb(tmp_path / "s.h5ad")
    assert out.obs["condition"].astype(str).tolist() == ["ctrl", "KLF1+ctrl", "KLF1+CEBPA"]
    assert out.obs["condition_scperturb"].tolist() == ["stim", "rest", "stim"]
    assert out.obs["perturbation"].tolist() == labels
    adata.obs["condition_scperturb"] = "x"
    adata.write_h5ad(tmp_path / "both.h5ad")
    with pytest.raises(ValueError, match=r"both 'condition' and 'condition_scperturb'"):
        datasets.read_scperturb(tmp_path / "both.h5ad")


def test_read_scperturb_makes_repeated_symbols_unique(tmp_path):
    counts = write_scperturb(tmp_path / "s.h5ad", ["control", "KLF1", "GATA1"])
    adata = ad.read_h5ad(tmp_path / "s.h5ad")
    with warnings.catch_warnings():  # anndata's own "not unique" warnings
        warnings.simplefilter("ignore")
        adata.var_names = ["KLF1", "GATA1", "KLF1", "TAL1", "KLF1"]
        adata.write_h5ad(tmp_path / "s.h5ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = datasets.read_scperturb(tmp_path / "s.h5ad")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages  # ours alone, not anndata's as well
    assert re.search(r"more than one column .*\['KLF1'\] \(1 in all\)", messages[0])
    assert list(out.var_names) == ["KLF1", "GATA1", "KLF1-1", "TAL1", "KLF1-2"]
    np.testing.assert_array_equal(out.layers["counts"].toarray(), counts)
    assert out.obs["condition"].astype(str).tolist() == ["ctrl", "KLF1+ctrl", "GATA1+ctrl"]


def test_read_scperturb_errors(tmp_path):
    write_scperturb(tmp_path / "nan.h5ad", ["control", "KLF1", np.nan])
    with pytest.raises(ValueError, match="missing or non-string perturbation"):
        datasets.read_scperturb(tmp_path / "nan.h5ad")
    write_scperturb(tmp_path / "noctrl.h5ad", ["KLF1", "CEBPA"])
    with pytest.raises(ValueError, match=r"No control cells.*control="):
        datasets.read_scperturb(tmp_path / "noctrl.h5ad")
    write_scperturb(tmp_path / "bad.h5ad", ["control", "KLF1__CEBPA"])
    with pytest.raises(ValueError, match="KLF1__CEBPA"):
        datasets.read_scperturb(tmp_path / "bad.h5ad")
    with pytest.raises(KeyError, match="perturbation_key='guide'"):
        datasets.read_scperturb(tmp_path / "bad.h5ad", perturbation_key="guide")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.read_scperturb(tmp_path / "absent.h5ad")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        datasets.read_scperturb(tmp_path)
    (tmp_path / "cut.h5ad").write_bytes(b"")  # an interrupted download: h5py's bare OSError
    with pytest.raises(ValueError, match=r"cut\.h5ad': not a valid, readable \.h5ad file"):
        datasets.read_scperturb(tmp_path / "cut.h5ad")
    (tmp_path / "gears").mkdir()
    (tmp_path / "gears" / "perturb_processed.h5ad").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"perturb_processed\.h5ad': not a valid, readable"):
        datasets.read_gears(tmp_path / "gears")


# --- script -----------------------------------------------------------------------------------


def test_script_writes_gears_folder(tmp_path):
    args = ["--n-cells", "300", "--n-genes", "40", "--n-singles", "6", "--n-doubles", "3"]
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path), *args, "--seed", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "perturb_processed.h5ad" in proc.stdout
    adata = datasets.read_gears(tmp_path / "perturbseq_sim")
    expected = datasets.perturbseq_simulation(
        n_cells=300, n_genes=40, n_singles=6, n_doubles=3, random_state=2
    )
    assert adata.shape == (300, 40)
    assert list(adata.var_names) == list(expected.var_names)
    np.testing.assert_array_equal(adata.X.toarray(), expected.X.toarray())
    assert (
        adata.obs["condition"].astype(str).tolist()
        == expected.obs["condition"].astype(str).tolist()
    )
    assert adata.uns["omicformer_dataset"]["simulated"]
    # refuses to overwrite unless asked
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "--overwrite" in again.stderr
