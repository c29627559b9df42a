"""``scgpt.tl.annotate``'s input: checks before any change, and the cells both sides read."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from .._core._anndata import check_layer, check_uns, labelled_cells, raw_if_scaled
from ._backed import reopened, streamable, subset
from ._genes import (
    case_ignored,
    gene_names,
    match_genes,
    set_gene_names,
    symbol_column,
    symbols_as_names,
    vocab_spelled,
    warn_if_raw_has_more_genes,
)
from ._resolve import needs_batch_labels, resolve_model

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger("omicformer.scgpt._annotate")  # the messages of tl.annotate

METHODS = ("finetune", "knn")
#: Reference and query must share at least this many vocabulary genes.
MIN_SHARED_GENES = 50


class Cells(NamedTuple):
    """Cells ``rows`` (``None``: all) of ``adata``: in memory, or a read-only backed AnnData."""

    adata: AnnData
    rows: np.ndarray | None


def check_inputs(
    adata: AnnData,
    reference: AnnData | None,
    label_key: str,
    model: Any,
    method: str,
    layer: str | None,
    gene_key: str | None,
    min_confidence: float,
) -> tuple[Cells, Cells, np.ndarray, Any, dict[str, int], str | None]:
    """Validate everything before any change.

    Returns the labelled reference and the query as :class:`Cells`, both read with only the
    genes they share in the model's vocabulary, the query mask, a reusable trained classifier
    (or ``None``), the gene counts and the ``gene_key`` both are read with (``var_names``
    of Ensembl ids with symbols in a ``var`` column: that column, see ``symbol_column``). In
    memory the reference is a copy of the labelled cells and the query a view (of ``raw``
    where ``X`` is scaled, see ``raw_if_scaled``). A ``backed="r"`` file is not loaded: it is
    reopened read-only (:func:`reopened`, genes outside the shared ones renamed so the model
    skips them) and read in chunks by training (the reference's labelled cells; with
    ``reference=None`` its unlabelled cells are registered with label code ``-1`` and skipped)
    and prediction (query
    cells). Other backed AnnData (``backed="r+"``, views) are loaded into memory.
    """
    if method not in METHODS:
        msg = f"method={method!r} must be one of {METHODS}."
        raise ValueError(msg)
    if not 0 <= min_confidence <= 1:
        msg = f"min_confidence={min_confidence} must lie in [0, 1]."
        raise ValueError(msg)
    source = adata if reference is None else reference
    where = "adata" if reference is None else "reference"
    if reference is not None and reference.n_obs == 0:
        msg = "reference has no cells."
        raise ValueError(msg)
    if adata.n_obs == 0:
        msg = "adata has no cells to label."
        raise ValueError(msg)
    check_uns(adata, "scgpt")
    if label_key not in source.obs.columns:
        columns = list(source.obs.columns)[:20]
        msg = f"label_key={label_key!r} is not a column of {where}.obs (columns: {columns})."
        raise KeyError(msg)
    for a, name in ((adata, "adata"), (source, where)):
        check_layer(a, layer, name)
        gene_names(a, gene_key, name)  # KeyError for an unknown gene_key
    has_label, counts = labelled_cells(
        source.obs[label_key], f"{where}.obs[{label_key!r}]",
        rare_hint="a class needs cells to learn from and to validate on",
    )  # fmt: skip
    if len(counts) < 2:
        msg = (
            f"{where}.obs[{label_key!r}] holds one label ({list(counts.index)}): there is "
            "nothing to choose between; label the reference with at least 2 cell types."
        )
        raise ValueError(msg)
    if reference is None:
        query_mask = ~has_label
        if not query_mask.any():
            msg = (
                f"every cell of adata has a label in obs[{label_key!r}]: nothing to predict. Pass "
                "the labelled cells as reference= (or leave the labels of the cells to predict "
                "missing)."
            )
            raise ValueError(msg)
    else:
        query_mask = np.ones(adata.n_obs, dtype=bool)
    # scaled X: read adata.raw instead (a warning says so); obs (labels) and rows stay the same
    given = adata
    adata = raw_if_scaled(adata, layer, gene_key, "adata")
    source = adata if reference is None else raw_if_scaled(reference, layer, gene_key, "reference")
    # each side as given, whether its raw is read instead, and the name messages give it
    sides = [(given, adata is not given, "adata")]
    _check_expression(adata, layer, "adata")  # before fine-tuning, not when predicting after it
    if reference is not None:
        sides.append((reference, source is not reference, "reference"))
        _check_expression(source, layer, "reference")
    fitted = _fitted_classifier(model, counts.index)
    if fitted is not None:
        module_vocab = fitted.vocab
    else:
        module, module_vocab, _ = resolve_model(model, task="embed")
        # "finetune" starts without a model's batch tokens and DSBN (the official annotation
        # recipe); the zero-shot embedding of "knn" would need each cell's batch
        if method == "knn" and needs_batch_labels(module):  # it failed deep in the forward
            msg = (
                "model has batch-dependent layers (trained with dsbn=True or "
                "use_batch_labels=True): its embedding needs each cell's batch, which "
                "tl.annotate(method='knn') does not read. Use method='finetune' (it starts "
                "without those layers, as the official annotation recipe), a model without them "
                "(e.g. 'default'), or tl.embed(batch_key=...) on both sides and a kNN of your own."
            )
            raise ValueError(msg)
    adata, source, gene_key = _symbol_columns(adata, source, reference, module_vocab, gene_key,
                                              layer)  # fmt: skip
    ref_ids = match_genes(source, module_vocab, gene_key)
    query_ids = match_genes(adata, module_vocab, gene_key)
    for (a, raw_read, name), ids in zip(sides, (query_ids, ref_ids), strict=False):
        warn_if_raw_has_more_genes(a, raw_read, layer, gene_key, module_vocab,
                                   int((ids >= 0).sum()), name)  # fmt: skip
    common = np.intersect1d(ref_ids[ref_ids >= 0], query_ids[query_ids >= 0])
    shared = common.size
    if shared < MIN_SHARED_GENES:
        msg = (
            f"reference and query share only {shared} genes known to the model (at least "
            f"{MIN_SHARED_GENES} needed); check that both use gene symbols (gene_key=)."
        )
        raise ValueError(msg)
    dropped = int((query_ids < 0).sum())
    if dropped or shared < (query_ids >= 0).sum():
        logger.info(
            "annotate: %d of %d query genes are not in the model's vocabulary and are dropped; "
            "%d genes known to the model are shared with the reference and read on both sides.",
            dropped, adata.n_vars, shared,
        )  # fmt: skip
    # both sides read the same genes, so that reference and query cells are comparable; a side
    # matched ignoring case is read with the vocabulary's spelling (a subset may match otherwise)
    ref_names = vocab_spelled(gene_names(source, gene_key), ref_ids, module_vocab)
    query_names = vocab_spelled(gene_names(adata, gene_key), query_ids, module_vocab)
    ref_keep, query_keep = np.isin(ref_ids, common), np.isin(query_ids, common)
    if streamable(source):  # the whole file, unlabelled cells coded -1 (never trained on)
        work = reopened(source, gene_key, ref_keep, layer, names=ref_names)
        values = source.obs[label_key].astype(str).where(has_label)
        work.obs = pd.DataFrame({label_key: pd.Categorical(values)},
                                index=source.obs_names.copy())  # fmt: skip
        ref = Cells(work, None if has_label.all() else np.flatnonzero(has_label))
    else:  # in memory (or a backed file that cannot stream): a copy of the labelled cells
        from .model._scvi import forget_scvi_setup

        sub = subset(source, has_label, ref_keep, layer).copy()
        if ref_names is not None:
            set_gene_names(sub, gene_key, ref_names[ref_keep])
        forget_scvi_setup(sub)  # its own setup must not replace the user's of the reference
        sub.obs[label_key] = pd.Categorical(sub.obs[label_key].astype(str))
        ref = Cells(sub, None)
    if streamable(adata):
        rows = None if query_mask.all() else np.flatnonzero(query_mask)
        if reference is None:  # the same file and genes as the reference: one handle
            query = Cells(ref.adata, rows)
        else:
            query = Cells(reopened(adata, gene_key, query_keep, layer, names=query_names), rows)
    else:
        cells = subset(adata, query_mask, query_keep, layer)
        if query_names is not None:  # a copy of the shared genes, named as the vocabulary
            cells = cells.copy()
            set_gene_names(cells, gene_key, query_names[query_keep])
        query = Cells(cells, None)
    genes = {"n_genes_matched": int((query_ids >= 0).sum()), "n_genes_shared": int(shared),
             "n_genes_total": int(adata.n_vars),
             "case_ignored": case_ignored(adata, module_vocab, gene_key)}  # fmt: skip
    return ref, query, query_mask, fitted, genes, gene_key


def _symbol_columns(
    adata: AnnData,
    source: AnnData,
    reference: AnnData | None,
    vocab: Any,
    gene_key: str | None,
    layer: str | None,
) -> tuple[AnnData, AnnData, str | None]:
    """Query, reference and the ``gene_key`` to read both with (``symbol_column`` per side).

    Where the two sides hold their symbols in different places (one in ``var_names``, one in
    a ``var`` column, e.g. a CELLxGENE query), an in-memory side is read through an AnnData
    with its symbols where the other side has them (:func:`symbols_as_names`; a
    ``backed="r"`` side is streamed from its file as it is), so one ``gene_key`` fits both.
    Two ``backed="r"`` sides: the query's file is opened again with its symbols where the
    reference has them (:func:`~omicformer.scgpt._backed.reopened`).
    """
    query_key = symbol_column(adata, vocab, gene_key, "adata")
    if reference is None:
        return adata, adata, query_key
    ref_key = symbol_column(source, vocab, gene_key, "reference")
    if query_key == ref_key:
        return adata, source, query_key
    streamed = [key for a, key in ((adata, query_key), (source, ref_key)) if streamable(a)]
    if len(streamed) == 2:  # two files keeping their symbols in different places
        every = np.ones(adata.n_vars, dtype=bool)
        return reopened(adata, query_key, every, layer, names_to=ref_key), source, ref_key
    target = streamed[0] if streamed else None
    if query_key != target:
        adata = symbols_as_names(adata, query_key, target)
    if ref_key != target:
        source = symbols_as_names(source, ref_key, target)
    return adata, source, target


def _fitted_classifier(model: Any, classes: pd.Index) -> Any:
    """``model`` when it is a trained ScGPTClassifier of exactly these classes, else None.

    A folder saved by a trained :class:`~omicformer.scgpt.model.ScGPTClassifier` of these
    classes is loaded and returned as well (of other classes, the folder is a starting point
    for fine-tuning). A :class:`~omicformer.scgpt.model.ScGPTClassifierEnsemble` (or a folder it
    saved) must be one: it is no starting point for fine-tuning (a ValueError says so).
    """
    from .model import ScGPTClassifier, ScGPTClassifierEnsemble
    from .model._ensemble import is_ensemble_dir

    ensemble = isinstance(model, ScGPTClassifierEnsemble) or is_ensemble_dir(model)
    if is_ensemble_dir(model):
        model = ScGPTClassifierEnsemble.load(model)
    elif _saved_classifier(model):
        model = ScGPTClassifier.load(model)  # used as it is if of these classes, else as weights
    if isinstance(model, ScGPTClassifier | ScGPTClassifierEnsemble) and model.is_trained_:
        if sorted(model.classes_) == sorted(str(c) for c in classes):
            return model
    if ensemble:
        state = "trained on the classes " if model.is_trained_ else "not trained; its classes: "
        msg = (
            f"model is an ScGPTClassifierEnsemble {state}{model.classes_}, the reference's labels "
            f"are {sorted(str(c) for c in classes)}: an ensemble labels cells as it is trained. "
            "To fine-tune from it, pass one member (model=ensemble.members[0]) with n_models=."
        )
        raise ValueError(msg)
    return None


def _saved_classifier(model: Any) -> bool:
    """Whether ``model`` is a folder saved by a trained ScGPTClassifier."""
    import json

    from .._core._io import CONFIG_NAME, is_model_dir

    if not isinstance(model, str | os.PathLike) or not is_model_dir(model):
        return False
    config = json.loads((Path(model).expanduser() / CONFIG_NAME).read_text())
    return config.get("model") == "ScGPTClassifier" and bool(config.get("is_trained"))


#: What :func:`_check_expression` advises: ``layer=`` names a layer of both AnnData.
ANNOTATE_HINT = (
    "scGPT expects raw counts or non-negative normalised expression, not scaled data. Pass "
    "layer= naming a layer of counts that adata and reference both hold, or give the scaled "
    "one as its .raw.to_adata() (or with adata.raw set to its log-normalised expression)."
)


def _check_expression(adata: AnnData, layer: str | None, name: str) -> None:
    """``ValueError`` for NaN/inf or negative expression of ``adata``, read in chunks."""
    from .._core._anndata import check_values, iter_row_chunks

    where = f"{name}.X" if layer is None else f"{name}.layers[{layer!r}]"
    for rows, chunk in iter_row_chunks(adata, layer):
        check_values(chunk, where, int(rows[0]) if len(rows) else 0, hint=ANNOTATE_HINT)
