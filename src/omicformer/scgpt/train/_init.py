"""Initialisation of gene-token embeddings from the principal axes of expression data.

Used by ``scripts/train_default_scgpt.py`` to pretrain the shipped default model: with a few
thousand cells, gene embeddings drawn at random (the official ``uniform(-0.1, 0.1)``) need
many epochs before co-expressed genes point the same way; starting them at the genes'
principal-component loadings gives the transformer that structure from step 0 (measured on
``pbmc68k_reduced``: see the default model's section of the scGPT guide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

if TYPE_CHECKING:
    from .._vocab import GeneVocab
    from ..module import TransformerModel


def pca_gene_loadings(X, n_components: int, *, scale: float = 0.1) -> np.ndarray:
    """Genes x ``n_components`` loadings of the standardised data, scaled to std ``scale``.

    Each gene (column of ``X``) is centred and divided by its standard deviation; the right
    singular vectors, multiplied by their singular values over ``sqrt(n_cells)`` (so that
    leading axes weigh more), are the loadings. The whole matrix is then multiplied so that its
    entries have standard deviation ``scale``. Components beyond ``min(n_cells, n_genes)`` are
    zero. Signs follow numpy's SVD.

    Parameters
    ----------
    X
        Cells x genes, log-normalised (dense or sparse).
    n_components
        Number of loading columns (the embedding width, ``d_model``).
    scale
        Standard deviation of the returned entries.

    Returns
    -------
    ``(n_genes, n_components)`` float32 array.
    """
    if n_components < 1 or scale <= 0:
        msg = f"n_components={n_components} must be >= 1 and scale={scale} > 0."
        raise ValueError(msg)
    Z = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] < 2 or not np.all(np.isfinite(Z)):
        msg = f"X must be a finite cells x genes matrix with at least 2 cells (got {Z.shape})."
        raise ValueError(msg)
    Z = (Z - Z.mean(0)) / np.where(Z.std(0) > 0, Z.std(0), 1.0)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    k = min(n_components, vt.shape[0])
    out = np.zeros((Z.shape[1], n_components))
    out[:, :k] = vt[:k].T * s[:k] / np.sqrt(Z.shape[0])
    sd = out.std()
    if sd > 0:
        out *= scale / sd
    return out.astype(np.float32)


def init_gene_embeddings_pca(
    module: TransformerModel,
    vocab: GeneVocab,
    X,
    genes: Sequence[str],
    *,
    scale: float = 0.1,
) -> int:
    """Set the gene-token embedding rows of ``genes`` to their PCA loadings in ``X``.

    Parameters
    ----------
    module
        An scGPT module; ``module.encoder.embedding`` is changed in place.
    vocab
        The module's vocabulary.
    X
        Cells x ``genes`` log-normalised expression (dense or sparse).
    genes
        Symbol of every column of ``X``; each must be in ``vocab``.
    scale
        Standard deviation of the initialised rows (see :func:`pca_gene_loadings`).

    Returns
    -------
    Number of embedding rows set. Special tokens and vocabulary genes not in ``genes`` keep
    their initial values.
    """
    genes = list(genes)
    if X.shape[1] != len(genes):
        msg = f"X has {X.shape[1]} columns but {len(genes)} gene names were given."
        raise ValueError(msg)
    missing = [g for g in genes if g not in vocab]
    if missing:
        msg = f"{len(missing)} gene(s) are not in the vocabulary, e.g. {missing[:5]}."
        raise KeyError(msg)
    weight = module.encoder.embedding.weight
    load = pca_gene_loadings(X, weight.shape[1], scale=scale)
    rows = torch.as_tensor([vocab[g] for g in genes], dtype=torch.long)
    with torch.no_grad():
        weight[rows] = torch.as_tensor(load, dtype=weight.dtype)
    return len(genes)
