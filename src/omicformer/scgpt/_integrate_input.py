"""``scgpt.tl.integrate``'s input: checks before any change, and the working AnnData."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._core._anndata import (
    check_backed_writable,
    check_layer,
    check_obs_key,
    check_uns,
    labelled_cells,
    raw_if_scaled,
    warn_batch_texts,
)
from ._genes import (
    case_ignored,
    gene_names,
    match_genes,
    match_report,
    set_gene_names,
    symbol_column,
    vocab_spelled,
    warn_if_raw_has_more_genes,
)
from ._resolve import resolve_model
from ._tokenize import check_gene_selection, check_max_len

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("omicformer.scgpt._integrate")  # the messages of tl.integrate

#: At least this many of the data's genes must be in the model's vocabulary.
MIN_GENES = 50
#: Values of ``correction`` besides ``None``.
CORRECTIONS = ("auto", "mnn", "harmony")


def prepare(
    adata: AnnData,
    batch_key: str,
    model: Any,
    labels_key: str | None,
    layer: str | None,
    gene_key: str | None,
    copy: bool,
    ecs_weight: float,
    dab_weight: float,
    mnn_weight: float | None,
    ecs_threshold: float,
    max_len: int | None,
    gene_selection: str | None,
    correction: str | None,
) -> tuple[AnnData, dict[str, Any], Any, bool, str | None]:
    """Validate everything before any change; return the working AnnData and gene counts.

    Also returns a reusable fitted model (or ``None``), whether the work is streamed and the
    ``gene_key`` the genes were read with (``symbol_column``: a symbol column of ``var``
    when ``var_names`` are not symbols).
    The working AnnData has ``obs[batch_key]`` (the batches as strings; a fitted model's own
    batch column) and, with ``labels_key``, ``obs[labels_key]`` (missing labels as the
    unlabelled category), so that the model trained on it reads the caller's columns when it
    embeds further cells; scvi-tools' setup writes into it, never into ``adata``. In memory
    it holds the vocabulary genes of ``adata`` (read in chunks, checked for NaN, negative
    values and cells without any such gene). A ``backed="r"`` ``adata``
    to fine-tune on (no fitted model passed; with one, its vocabulary genes are read into
    memory, as the public docstring says) is not loaded: the working AnnData is then its
    file reopened read-only (same ``layer`` and ``gene_key``), streamed by training (which
    checks the values first) and read in chunks by the embedding.
    """
    import anndata as ad
    import scipy.sparse as sp

    from ._backed import reopened, streamable
    from ._embed import vocab_chunks

    check_layer(adata, layer)
    check_uns(adata, "scgpt")
    if batch_key is None:  # check_obs_key lets None through (an optional key not given)
        msg = (
            "batch_key=None: integration needs the adata.obs column with each cell's batch "
            f"(columns: {list(adata.obs.columns)[:20]})."
        )
        raise ValueError(msg)
    check_obs_key(adata, batch_key, "batch_key")
    check_obs_key(adata, labels_key, "labels_key")
    if labels_key is not None and labels_key == batch_key:
        msg = (
            f"labels_key={labels_key!r} is the batch_key: the cell types must be another obs "
            "column than the batches (or drop labels_key=)."
        )
        raise ValueError(msg)
    for name, value in (("ecs_weight", ecs_weight), ("dab_weight", dab_weight),
                        ("mnn_weight", mnn_weight)):  # fmt: skip
        if value is not None and value < 0:
            msg = f"{name}={value} must be >= 0."
            raise ValueError(msg)
    if correction is not None and correction not in CORRECTIONS:
        msg = f"correction={correction!r} must be one of {list(CORRECTIONS)} or None."
        raise ValueError(msg)
    if not 0 <= ecs_threshold <= 1:
        msg = f"ecs_threshold={ecs_threshold} must lie in [0, 1]."
        raise ValueError(msg)
    check_max_len(max_len)
    if gene_selection is not None:
        check_gene_selection(gene_selection)
    check_backed_writable(adata, copy, "obsm")
    batches = adata.obs[batch_key]
    if batches.isna().any():
        msg = (
            f"adata.obs[{batch_key!r}] is missing for {int(batches.isna().sum())} cells; every "
            "cell needs a batch."
        )
        raise ValueError(msg)
    warn_batch_texts(batches, batch_key, "integrated as one batch of their own")
    n_batches = batches.astype(str).nunique()
    if n_batches < 2:
        msg = (
            f"adata.obs[{batch_key!r}] has only one batch ({batches.astype(str).iloc[0]!r}); "
            "integration needs at least 2. Use scgpt.tl.embed for a single batch; to embed "
            "further cells of a batch an ScGPTIntegration was trained on, call its "
            "get_latent_representation(adata) (the correction after fine-tuning, Harmony or "
            "MNN, needs the batches together and is not applied)."
        )
        raise ValueError(msg)
    labels = None
    if labels_key is not None:
        labels = check_labels(adata.obs[labels_key], labels_key)

    given = adata
    adata = raw_if_scaled(adata, layer, gene_key, "adata")  # scaled X: read adata.raw (warns)
    fitted = fitted_integration(model, batches)
    if fitted is not None:
        vocab = fitted.vocab
    else:
        vocab = resolve_model(model, task="embed")[1]
    gene_key = symbol_column(adata, vocab, gene_key, "adata")
    gene_ids = match_genes(adata, vocab, gene_key)
    warn_if_raw_has_more_genes(given, adata is not given, layer, gene_key, vocab,
                               int((gene_ids >= 0).sum()))  # fmt: skip
    genes = match_report(gene_ids, case_ignored(adata, vocab, gene_key))
    if genes["n_genes_matched"] < MIN_GENES:
        msg = (
            f"only {genes['n_genes_matched']} of the {genes['n_genes_total']} genes are in the "
            f"model's vocabulary (at least {MIN_GENES} needed); check gene_key= (gene symbols)."
        )
        raise ValueError(msg)
    dropped = genes["n_genes_total"] - genes["n_genes_matched"]
    if dropped:
        logger.info("integrate: %d of %d genes are not in the model's vocabulary and are dropped.",
                    dropped, genes["n_genes_total"])  # fmt: skip
    batch_column = batch_key if fitted is None else fitted.get_setup_arg("batch_key")
    obs = pd.DataFrame({batch_column: pd.Categorical(batches.astype(str).to_numpy())},
                       index=adata.obs_names.copy())  # fmt: skip
    if labels is not None and fitted is None:  # a fitted model is not trained again: no labels
        obs[labels_key] = labels
    if fitted is None and streamable(adata):
        names = vocab_spelled(gene_names(adata, gene_key), gene_ids, vocab)
        work = reopened(adata, gene_key, gene_ids >= 0, layer, names=names)
        work.obs = obs
        return work, genes, fitted, True, gene_key
    cols = np.flatnonzero(gene_ids >= 0)
    X = sp.vstack([sub for _, sub in vocab_chunks(adata, layer, cols)], format="csr")
    # named by the vocabulary's tokens: matched again as they were here (case, a subset), and a
    # symbol on two columns (two Ensembl ids, non-unique var_names) read twice, as tl.embed reads it
    work = ad.AnnData(X=X, obs=obs)
    set_gene_names(work, None, np.asarray(vocab.genes(), dtype=object)[gene_ids[cols]])
    return work, genes, fitted, False, gene_key


def check_labels(values: pd.Series, key: str) -> pd.Categorical:
    """Cell-type labels, missing/empty values as the unlabelled category; checks them."""
    from .model._integration import UNLABELLED

    has, counts = labelled_cells(
        values, f"adata.obs[{key!r}]", no_label_hint="drop labels_key= or add labels",
        rare_hint="or set them missing",
    )  # fmt: skip
    if UNLABELLED in counts.index:
        msg = (
            f"adata.obs[{key!r}] uses {UNLABELLED!r} as a label; it marks unlabelled cells here. "
            "Set those cells' labels missing (NaN) instead."
        )
        raise ValueError(msg)
    named = np.where(has, values.astype(str).to_numpy(), UNLABELLED)
    return pd.Categorical(named, categories=[*sorted(counts.index), UNLABELLED])


def fitted_integration(model: Any, batches: pd.Series) -> Any:
    """``model`` when it is a trained ScGPTIntegration knowing every batch of ``batches``."""
    from .model import ScGPTIntegration

    if isinstance(model, ScGPTIntegration) and model.is_trained_:
        if set(batches.astype(str)) <= {str(b) for b in model.batches_}:
            return model
    return None
