"""A synthetic single-cell atlas of any size, written to ``.h5ad`` without holding it in memory.

Used by ``benchmarks/scaling.py`` (its docstring, "Data", describes the counts): negative
binomial counts of 20,000 real gene symbols in 12 cell types, each cell's UMIs in Poisson-many
log-series bursts placed on genes drawn from its type's profile (Walker alias tables, so a
draw costs the same for any number of genes). Each chunk of cells draws from its own random
stream, seeded by ``(seed, chunk index)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

N_GENES, N_TYPES, BURST_Q = 20_000, 12, 0.5


def gene_symbols(n: int = N_GENES) -> list[str]:
    """``n`` real gene symbols: a fixed random subset of the census vocabulary, in its order."""
    from omicformer import datasets

    census = list(datasets.official_census_vocab())
    keep = np.sort(np.random.default_rng(0).choice(len(census), n, replace=False))
    return [census[i] for i in keep]


def _alias_tables(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables of each row of ``p`` (rows sum to 1): O(1) categorical draws."""
    n_rows, n = p.shape
    prob, alias = np.ones((n_rows, n)), np.zeros((n_rows, n), dtype=np.int64)
    for k in range(n_rows):
        q = p[k] * n
        small, large = list(np.flatnonzero(q < 1)), list(np.flatnonzero(q >= 1))
        while small and large:
            s, g = small.pop(), large.pop()
            prob[k, s], alias[k, s] = q[s], g
            q[g] -= 1 - q[s]
            (small if q[g] < 1 else large).append(g)
    return prob.ravel(), alias.ravel()


class CountSampler:
    """Chunks of negative-binomial cells x genes CSR counts (see the module docstring)."""

    def __init__(self, n_genes: int, median_umi: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        means = rng.lognormal(0.0, 2.0, n_genes)[None] * rng.lognormal(0.0, 0.7, (N_TYPES, n_genes))
        self.prob, self.alias = _alias_tables(means / means.sum(axis=1, keepdims=True))
        self.n_genes, self.median_umi, self.seed = n_genes, median_umi, seed
        self.mean_burst = -BURST_Q / ((1 - BURST_Q) * np.log(1 - BURST_Q))

    def chunk(self, index: int, n: int):
        """Cells of chunk ``index`` (its own random stream): ``(csr counts, cell types)``."""
        import scipy.sparse as sp

        rng = np.random.default_rng([self.seed, index])
        types = rng.integers(0, N_TYPES, n)
        umis = rng.lognormal(np.log(self.median_umi), 0.45, n)
        bursts = rng.poisson(umis / self.mean_burst)
        total = int(bursts.sum())
        slot = (rng.random(total) * self.n_genes).astype(np.int64)
        slot += np.repeat(types * self.n_genes, bursts)
        genes = np.where(rng.random(total) < self.prob[slot], slot, self.alias[slot])
        genes %= self.n_genes
        sizes = rng.logseries(BURST_Q, total).astype(np.float32)
        rows = np.repeat(np.arange(n, dtype=np.int32), bursts)
        X = sp.coo_matrix((sizes, (rows, genes.astype(np.int32))), shape=(n, self.n_genes))
        X = X.tocsr()
        X.sum_duplicates()  # also sorts the indices
        return X, types


def write_synthetic(path: Path, n_cells: int, *, median_umi: float = 1500.0, seed: int = 0,
                    chunk: int = 10_000) -> dict:  # fmt: skip
    """Write ``n_cells`` synthetic cells as an ``.h5ad`` (CSR ``X``), ``chunk`` cells at a time.

    ``X`` is appended chunk by chunk to resizable HDF5 datasets in anndata's CSR encoding;
    ``obs`` (names, ``cell_type``) and ``var`` go through anndata's element writer. Written
    under a temporary name, then renamed.
    """
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    genes = gene_symbols()
    sampler = CountSampler(len(genes), median_umi, seed)
    tmp = path.with_name(f".{path.name}.tmp")
    nnz, types = 0, []
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                        "shape": np.array([n_cells, len(genes)])})  # fmt: skip
        opts = {"chunks": (1 << 18,), "maxshape": (None,)}
        data = g.create_dataset("data", (0,), dtype=np.float32, **opts)
        indices = g.create_dataset("indices", (0,), dtype=np.int32, **opts)
        indptr = g.create_dataset("indptr", (n_cells + 1,), dtype=np.int64)
        indptr[0] = 0
        for i, s in enumerate(range(0, n_cells, chunk)):
            X, t = sampler.chunk(i, min(chunk, n_cells - s))
            for ds, values in ((data, X.data), (indices, X.indices)):
                ds.resize((nnz + X.nnz,))
                ds[nnz:] = values
            indptr[s + 1 : s + 1 + X.shape[0]] = nnz + X.indptr[1:]
            nnz += X.nnz
            types.append(t)
        codes = np.concatenate(types)
        obs = pd.DataFrame(
            {"cell_type": pd.Categorical.from_codes(codes, [f"type{k}" for k in range(N_TYPES)])},
            index=pd.Index([f"c{i}" for i in range(n_cells)]),
        )
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=pd.Index(genes)))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    os.replace(tmp, path)
    return {"n_cells": n_cells, "nnz": nnz, "bytes": path.stat().st_size}
