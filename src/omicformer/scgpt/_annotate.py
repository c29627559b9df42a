"""``scgpt.tl.annotate``: label cells from a labelled reference with scGPT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from ._annotate_input import Cells, check_inputs
from ._backed import closes_reopened
from ._embed import empty_cells_warned_once, genes_read_are_shared
from ._genes import case_warning_given, match_genes
from ._resolve import describe_model, gene_selection_of, max_len_of, resolve_model
from ._tokenize import check_gene_selection, check_max_len

if TYPE_CHECKING:
    from anndata import AnnData

UNKNOWN = "Unknown"


@closes_reopened  # its read-only handles on the caller's file, also on errors
@empty_cells_warned_once
@case_warning_given  # the tl function warns; the model classes it drives do not
def annotate(
    adata: AnnData,
    reference: AnnData | None = None,
    *,
    label_key: str,
    model: Any = "default",
    method: str = "finetune",
    key_added: str | None = None,
    layer: str | None = None,
    gene_key: str | None = None,
    min_confidence: float = 0.0,
    max_epochs: int | None = None,
    max_len: int | None = None,
    gene_selection: str | None = None,
    batch_size: int = 32,
    dropout: float = 0.0,
    probe: bool = True,
    n_models: int = 1,
    smooth_neighbors: int = 15,
    n_neighbors: int = 15,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    return_model: bool = False,
    copy: bool = False,
) -> Any:
    """Annotate cells from a labelled reference with scGPT (cell-type label transfer).

    ``method="finetune"`` (the official scGPT annotation recipe): start from the pretrained
    model, fine-tune encoder and a classifier head on the reference's labels (cross-entropy,
    with inverse-frequency class weights, which the official tutorial does not use; 10% of each
    label's reference cells held out for early stopping and to calibrate the probabilities by
    temperature scaling), then predict.
    Departures from the official recipe, all measured on the annotation benchmarks: the head
    reads the mean output of the cell's gene tokens rather than the ``<cls>`` output,
    standardised while training; a logistic regression on the pretrained (not fine-tuned)
    embedding labels the query cells that lie among the reference cells there, the fine-tuned
    head those far from all of them, as cells of another experiment
    (:meth:`~omicformer.scgpt.model.ScGPTClassifier.train`, ``cell_emb_style``,
    ``standardize`` and ``probe``); those far cells share their query neighbours' predictions
    (``smooth_neighbors``); and with ``n_models=2`` two classifiers are fine-tuned with
    different seeds and their predictions averaged.
    ``method="knn"``: no training; the query is labelled by its ``n_neighbors`` nearest
    reference cells in the zero-shot scGPT embedding (fast reference mapping).

    Parameters
    ----------
    adata
        Cells to label (raw counts or other non-negative expression in ``X`` or ``layer``;
        gene symbols in ``var_names`` or ``var[gene_key]``). ``backed="r"`` works for
        ``adata`` and ``reference``: their files are read in chunks of cells, for prediction
        and for fine-tuning (streamed, as ``ScGPTClassifier.train(streaming=True)``), so
        memory does not grow with the number of cells, also with ``reference=None`` (the
        file's labelled cells are trained on, its unlabelled ones predicted);
        ``backed="r+"`` data and a view of backed data as ``reference`` are loaded (a view
        of backed data as ``adata`` cannot hold the labels: pass ``adata.to_memory()``).
    reference
        Labelled cells, ``reference.obs[label_key]``, with the same kind of expression and
        gene names. ``None``: the labelled cells of ``adata`` are the reference and its cells
        without a label (missing or empty) are predicted.
    label_key
        ``obs`` column with the labels. Missing values (NaN, ``None``), empty strings and the
        texts ``"nan"``, ``"<NA>"`` and ``"None"`` (what ``.astype(str)`` makes of missing
        values; with a warning) are no label: such reference cells are not trained on.
    model
        ``"default"``, an official scGPT folder, a folder saved by ``save``, or an
        :class:`~omicformer.scgpt.model.ScGPT` (an
        :class:`~omicformer.scgpt.model.ScGPTClassifier` or
        :class:`~omicformer.scgpt.model.ScGPTClassifierEnsemble`, or a folder either saved,
        already trained on these classes is used as it is, without retraining; the
        fine-tuning arguments ``max_epochs``, ``max_len``, ``gene_selection``, ``dropout``,
        ``probe`` and ``n_models`` then do not apply, and a warning names those given).
        A model with batch-dependent layers (batch tokens, DSBN: an integration model, say)
        is fine-tuned without them, as the official annotation recipe builds its model;
        ``"knn"`` refuses it (its embedding needs each cell's batch).
    method
        ``"finetune"`` or ``"knn"``.
    key_added
        ``obs`` column for the predictions; default ``"scgpt_" + label_key``. No ``"/"`` for
        a backed ``adata`` (HDF5 reads it as nested groups).
    layer, gene_key
        Where the expression and the gene symbols are (the same for ``reference``).
        ``gene_key=None`` reads ``var_names``, or a ``var`` column of symbols where they are
        Ensembl ids (see :func:`~omicformer.scgpt.tl.embed`). ``layer=None`` reads ``X``, or
        ``raw`` (with a warning) where ``X`` holds scaled values (negative ones: scanpy's
        ``sc.pp.scale``) and ``raw`` none (in memory; a ``backed="r"`` file's ``X`` is read
        as it is).
    min_confidence
        Cells whose confidence is below this become ``"Unknown"``; in ``[0, 1]``.
    max_epochs
        Fine-tuning epochs; ``None`` scales with the reference size (about 8,000 cell passes,
        between 3 and 100 epochs, at most 12,000 cell passes), and early stopping ends sooner
        when the held-out loss has not improved for about 2,000 cell passes (at least 5
        epochs).
    max_len
        Tokens per cell (``<cls>`` included). ``None``: 256 for ``"finetune"``, the length the
        default model was pretrained with (training cost grows with it; on
        ``pbmc68k_reduced`` it also gave a higher held-out macro-F1 than 1200: 0.565 against
        0.407), and for ``"knn"`` the length :func:`~omicformer.scgpt.tl.embed` uses: the
        model's own (1200 for the default model and official checkpoints, 256 for a model
        fine-tuned by this function or :func:`~omicformer.scgpt.tl.integrate`). With
        ``"finetune"`` a cell with more expressed genes keeps its ``max_len - 1`` most highly
        expressed ones (binned among themselves; the official recipe keeps a random subset,
        see ``ScGPTClassifier.gene_selection``); with ``"knn"`` a random subset, as
        :func:`~omicformer.scgpt.tl.embed`.
    gene_selection
        Which genes a cell with more than ``max_len - 1`` expressed genes keeps, in training
        and prediction: ``"highest"`` (its most highly expressed) or ``"random"`` (a seeded
        random subset, the official recipe). ``None``: ``"highest"`` for ``"finetune"``; for
        ``"knn"`` the model's own, as :func:`~omicformer.scgpt.tl.embed` (``"random"`` for the
        default model and official checkpoints). A classifier passed as ``model`` to
        ``"finetune"`` keeps its own.
    batch_size
        Cells per minibatch.
    dropout
        Dropout while fine-tuning (the official tutorial uses 0.2). On a CPU a training step
        with dropout 0.1 took 4x as long as without.
    probe
        ``"finetune"``: also fit the reference probe (a logistic regression on each cell's
        bin-weighted mean of the pretrained embeddings of all its expressed genes, used for the
        query cells that lie among the reference cells there;
        ``ScGPTClassifier.train(probe=...)``). ``False``: the fine-tuned head labels every
        cell. With the default model the probe lifted query macro-F1 on the 70/30 splits of
        ``docs/benchmarks.md`` (e.g. 0.630 to 0.722 on ``pbmc68k_reduced``, 0.81 to 0.946 on
        ``oligodendroglioma``), and on the transfers between experiments it changed little
        (0.805 to 0.797) or helped (0.922 to 0.953). A classifier passed as ``model`` keeps
        its own.
    n_models
        ``"finetune"``: classifiers fine-tuned, with seeds ``random_state + 100 * i``, whose
        mean prediction labels the cells (a
        :class:`~omicformer.scgpt.model.ScGPTClassifierEnsemble`; ``1``: one
        :class:`~omicformer.scgpt.model.ScGPTClassifier`, the default). Time grows with it: on
        a 2-core CPU without AVX-512, 30% of ``pbmc68k_reduced`` labelled from the other 70%
        took 324 s with 2, 142 s with 1 (the default; 2 was from 2026-12-05 to 2026-12-08).
        With the default model, between PBMC experiments, 2 raised query macro-F1 on average
        over six classifiers and every pair of them (PBMC 3k to ``pbmc_celltypist`` 0.765 to
        0.796, ``pbmc68k_reduced`` to ``pbmc_celltypist`` 0.820 to 0.845), though not on
        another machine's seeds 0-2 (``docs/benchmarks.md``); on 70/30 splits of one
        experiment it changed little. A classifier passed as ``model`` keeps its own.
    smooth_neighbors
        ``"finetune"`` with the probe: a query cell far from the reference cells (where the
        fine-tuned head decides) takes, for the head's share of its prediction, a
        kernel-weighted mean prediction of its ``smooth_neighbors`` nearest query cells (itself
        included) in the probe's bag of gene embeddings; cells among the reference keep their
        own. ``1``: every cell on its own (each cell's label then depends on no other query
        cell). See :meth:`~omicformer.scgpt.model.ScGPTClassifier.predict_proba`.
    n_neighbors
        Neighbours of ``method="knn"``: the reference cells that vote for each query cell, at
        most the reference's cells per class (its cells over its classes; with more, the votes
        follow the classes' sizes: with as many as the reference has cells, every cell gets
        the largest class). A tie goes to the tied class whose voter is nearest.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... Fine-tuning runs on CUDA when the device is a CUDA
        device, else on the CPU; embedding and prediction run on the device (``"auto"``:
        CUDA, then Apple MPS, then CPU).
    random_state
        Seed of the validation split and of training: equal seeds give equal labels on CPU.
    progress
        Progress bars.
    return_model
        Also return the fitted model (the
        :class:`~omicformer.scgpt.model.ScGPTClassifier`, or with ``n_models`` of 2 or more
        the :class:`~omicformer.scgpt.model.ScGPTClassifierEnsemble`; for ``"knn"`` a scikit-learn
        ``KNeighborsClassifier`` whose ``predict`` breaks ties as ``annotate`` does), to label
        further data without retraining.
    copy
        Return a copy of ``adata`` with the results instead of writing into it.

    Returns
    -------
    ``None``, the annotated copy (``copy=True``), the model (``return_model=True``), or
    ``(copy, model)``. Sets the following fields:

    ``adata.obs[key_added]``
        Predicted label (categorical; ``"Unknown"`` below ``min_confidence``). With
        ``reference=None`` the labelled cells keep their own label.
        Its categories follow the reference column's order (its categories when it is
        categorical, else numeric order for numbered labels such as clusters).
    ``adata.uns[key_added + "_colors"]``
        The reference's colours of each label (``uns[label_key + "_colors"]``, as scanpy's
        plots store them), when it has them; ``"Unknown"`` light grey. Otherwise colours left
        by an earlier call under this key are removed, and scanpy picks new ones.
    ``adata.obs[key_added + "_confidence"]``
        Probability of the predicted label (calibrated on held-out reference cells for
        ``"finetune"``; the neighbours' vote share for ``"knn"``); ``NaN`` for cells that were
        not predicted.
    ``adata.uns["scgpt"][key_added]``
        ``params`` (the arguments; ``params["probe"]`` and ``params["n_models"]``: whether the
        classifier that labelled the cells has the reference probe, and how many fine-tuned
        members it has, ``None`` for ``"knn"``; ``params["max_len"]`` and
        ``params["gene_selection"]``: how the cells were read; ``params["n_neighbors"]``
        for ``"knn"``: the neighbours that voted), ``classes``, ``validation`` scores (accuracy and
        macro-F1 on the held-out reference cells, with ``n_cells`` and ``n_classes``, how many
        cells and classes were held out; with several members the mean accuracy and macro-F1,
        and each member's scores under ``"member_<i>"``) and the gene counts:
        ``n_genes_matched`` (query genes in the model's vocabulary), ``n_genes_shared`` (of
        those, also in the reference: the genes both sides are read with, so that their cells
        are comparable), ``n_genes_total`` and ``case_ignored`` (query symbols matched
        ignoring case).

    Examples
    --------
    >>> from omicformer import datasets, scgpt
    >>> ref = datasets.pbmc68k_reduced()
    >>> query = datasets.pbmc_celltypist()
    >>> scgpt.tl.annotate(query, reference=ref, label_key="bulk_labels")
    >>> query.obs[["scgpt_bulk_labels", "scgpt_bulk_labels_confidence"]].head()

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    from .._core._anndata import check_backed_writable
    from .._core._checks import check_int, check_key, check_seed, warn_ignored
    from .model._probe_smooth import check_smooth_neighbors

    key_added = f"scgpt_{label_key}" if key_added is None else check_key(key_added)
    check_seed(random_state)
    smooth_neighbors = check_smooth_neighbors(smooth_neighbors)
    n_models = check_int("n_models", n_models, hint="1 fine-tunes a single classifier")
    n_neighbors = check_int("n_neighbors", n_neighbors, hint="the reference cells that vote")
    max_len = check_max_len(max_len)
    if gene_selection is not None:
        check_gene_selection(gene_selection)
    # the labels stay with a backed file, which only an .h5ad can hold: no "/" in key_added
    check_backed_writable(adata, copy, "the predicted labels", key_added)
    ref, query, query_mask, fitted, genes, gene_key = check_inputs(
        adata, reference, label_key, model, method, layer, gene_key, min_confidence
    )
    if reference is not None:  # a cell may express vocabulary genes, but only unshared ones
        genes_read_are_shared()
    if method == "finetune" and fitted is not None:
        warn_ignored(
            annotate,
            {"max_epochs": max_epochs, "max_len": max_len, "gene_selection": gene_selection,
             "dropout": dropout, "probe": probe, "n_models": n_models},
            "model is a classifier already trained on these labels and labels the cells as it is",
        )  # fmt: skip
    if method == "knn":
        warn_ignored(
            annotate,
            {"max_epochs": max_epochs, "dropout": dropout, "probe": probe, "n_models": n_models,
             "smooth_neighbors": smooth_neighbors},
            "method='knn' trains no model",
            "",
        )  # fmt: skip
    if method == "finetune":
        max_len = 256 if max_len is None else max_len
        proba, validation, fitted_model = _finetune(
            ref, query, label_key, model, fitted, layer=layer, gene_key=gene_key,
            max_epochs=max_epochs, max_len=max_len,
            gene_selection=gene_selection, batch_size=batch_size, dropout=dropout, probe=probe,
            n_models=n_models, smooth_neighbors=smooth_neighbors, device=device,
            random_state=random_state, progress=progress,
        )  # fmt: skip
        selection, has_probe = fitted_model.gene_selection, _has_probe(fitted_model)
        # the length the cells were read with (an ensemble's members share it)
        max_len = (
            fitted_model.members[0] if hasattr(fitted_model, "members") else fitted_model
        ).max_len
        members = getattr(fitted_model, "n_models", 1)
    else:
        has_probe = members = None
        selection = gene_selection_of(model) if gene_selection is None else gene_selection
        max_len = max_len_of(model) if max_len is None else max_len  # as tl.embed
        proba, validation, fitted_model, best = _knn(
            ref, query, label_key, model, layer=layer, gene_key=gene_key, n_neighbors=n_neighbors,
            max_len=max_len, batch_size=batch_size, device=device,
            gene_selection=selection, random_state=random_state, progress=progress,
        )  # fmt: skip
        n_neighbors = fitted_model.n_neighbors  # those that voted

    classes = list(proba.columns)
    if method == "finetune":
        best = proba.to_numpy().argmax(1)
    conf = proba.to_numpy()[np.arange(len(best)), best]
    predicted = np.asarray(classes, dtype=object)[best]
    predicted[conf < min_confidence] = UNKNOWN

    adata = adata.copy() if copy else adata
    labels = np.full(adata.n_obs, None, dtype=object)
    confidence = np.full(adata.n_obs, np.nan)
    if reference is None:
        known = ~query_mask
        # as text the way the classes were named ("1", not the "1.0" of a nullable column)
        labels[known] = adata.obs[label_key].astype(str).to_numpy()[known]
    labels[query_mask], confidence[query_mask] = predicted, conf
    # a reference class may itself be called 'Unknown': the two then share the category
    unsure = (predicted == UNKNOWN).any() and UNKNOWN not in classes
    source = adata if reference is None else reference
    categories = label_order(source.obs[label_key], classes) + ([UNKNOWN] if unsure else [])
    colors = reference_colors(source, label_key, categories)
    adata.obs[key_added] = pd.Categorical(labels, categories=categories)
    if colors is not None:  # scanpy's plots then colour each label as in the reference
        adata.uns[f"{key_added}_colors"] = colors
    else:  # a previous call's colours would belong to other categories: scanpy picks anew
        adata.uns.pop(f"{key_added}_colors", None)
    adata.obs[f"{key_added}_confidence"] = confidence
    adata.uns.setdefault("scgpt", {})[key_added] = {
        "params": {
            "label_key": label_key, "method": method, "model": describe_model(model), "layer": layer,
            "gene_key": gene_key, "min_confidence": min_confidence, "max_epochs": max_epochs,
            "max_len": max_len,
            "gene_selection": selection,
            "batch_size": batch_size, "dropout": dropout, "probe": has_probe, "n_models": members,
            "smooth_neighbors": smooth_neighbors if has_probe else None,
            "n_neighbors": n_neighbors, "random_state": random_state,
            "reference": "adata" if reference is None else "reference",
        },
        "classes": classes,
        "validation": validation,
        **genes,
    }  # fmt: skip
    if return_model:
        return (adata, fitted_model) if copy else fitted_model
    return adata if copy else None


def label_order(values: pd.Series, classes: list[str]) -> list[str]:
    """``classes`` in the reference column's order, for the predictions' categories.

    A categorical column gives its categories' order (as scanpy's plots and the reference's
    colours use it); otherwise numeric order where every class is a number (``"2"`` before
    ``"10"``, as clusters are numbered), else ``classes`` as they are.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        rank = {str(c): i for i, c in enumerate(values.cat.categories)}
        return sorted(classes, key=lambda c: rank.get(c, len(rank)))
    numbers = pd.to_numeric(pd.Series(classes, dtype=object), errors="coerce")
    if numbers.isna().any():
        return list(classes)
    return [classes[i] for i in np.argsort(numbers.to_numpy(), kind="stable")]


def reference_colors(source: AnnData, label_key: str, categories: list[str]) -> list[str] | None:
    """The reference's colours (``uns[label_key + "_colors"]``) of ``categories``, else None.

    ``"Unknown"``, unless the reference has such a label, is drawn light grey, as scanpy draws
    missing values. ``None`` when the reference has no colours for this column, or not one per
    category of a categorical column.
    """
    values, colors = source.obs[label_key], source.uns.get(f"{label_key}_colors")
    if colors is None or not isinstance(values.dtype, pd.CategoricalDtype):
        return None
    if len(colors) != len(values.cat.categories):
        return None
    lut = {str(c): str(colors[i]) for i, c in enumerate(values.cat.categories)}
    lut.setdefault(UNKNOWN, "lightgray")
    if any(c not in lut for c in categories):
        return None
    return [lut[c] for c in categories]


# ---------------------------------------------------------------------------- methods
def _has_probe(clf: Any) -> bool:
    """Whether the classifier (or every member of an ensemble) has the reference probe."""
    return clf.has_probe if hasattr(clf, "members") else clf.probe_ is not None


def _finetune(ref, query, label_key, model, fitted, *, layer, gene_key, max_epochs, max_len,
              gene_selection, batch_size, dropout, probe, n_models, smooth_neighbors, device,
              random_state, progress):  # fmt: skip
    from .._core._device import resolve_device
    from .model import ScGPTClassifier, ScGPTClassifierEnsemble

    clf = fitted
    if clf is None:
        ScGPTClassifier.setup_anndata(ref.adata, layer=layer, labels_key=label_key,
                                      gene_key=gene_key)  # fmt: skip
        # no batch_key here: a model's batch tokens and DSBN are left out (official recipe)
        start = {"max_len": max_len, "gene_selection": gene_selection, "drop_batch_layers": True}
        if n_models == 1:
            clf = ScGPTClassifier.load_pretrained(model, ref.adata, **start)
        else:
            clf = ScGPTClassifierEnsemble.load_pretrained(
                model, ref.adata, n_models=n_models, **start
            )
        dev = resolve_device(device)
        clf.train(
            max_epochs=max_epochs, batch_size=batch_size, dropout=dropout, probe=probe,
            random_state=random_state,
            accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1,
            enable_progress_bar=progress,
        )  # fmt: skip
    proba = clf._proba(query.adata, rows=query.rows, device=device, random_state=random_state,
                       progress=progress, smooth_neighbors=smooth_neighbors)  # fmt: skip
    return proba, dict(getattr(clf, "validation_scores_", {})), clf


def _knn(ref, query, label_key, model, *, layer, gene_key, n_neighbors, max_len, batch_size,
         device, gene_selection, random_state, progress):  # fmt: skip
    from sklearn.metrics import accuracy_score, f1_score

    from .._core._train import split_indices
    from ._embed import embed_cells

    module, vocab, _ = resolve_model(model, task="embed")

    done: dict[int, np.ndarray] = {}

    def embed(cells: Cells) -> np.ndarray:
        a = cells.adata
        if id(a) not in done:  # all cells, once per AnnData (backed: read in chunks)
            ids = match_genes(a, vocab, gene_key)
            done[id(a)] = embed_cells(
                module, vocab, a, gene_ids=ids, layer=layer, batch_size=batch_size,
                max_len=max_len, n_bins=module.config.n_bins, device=device,
                gene_selection=gene_selection, random_state=random_state, progress=progress,
            )  # fmt: skip
        return done[id(a)] if cells.rows is None else done[id(a)][cells.rows]

    ref_emb, query_emb = embed(ref), embed(query)
    y = ref.adata.obs[label_key].astype(str).to_numpy()
    y = y if ref.rows is None else y[ref.rows]
    fit, held = split_indices(len(y), 0.1, random_state)
    validation = {}
    if len(held):
        check = NearestTieKNN(voters(n_neighbors, y[fit])).fit(ref_emb[fit], y[fit])
        pred = check.predict(ref_emb[held])
        validation = {"n_cells": len(held), "n_classes": len(np.unique(y[held])),
                      "accuracy": float(accuracy_score(y[held], pred)),
                      "macro_f1": float(f1_score(y[held], pred, average="macro"))}  # fmt: skip
    knn = NearestTieKNN(voters(n_neighbors, y)).fit(ref_emb, y)
    names = query.adata.obs_names if query.rows is None else query.adata.obs_names[query.rows]
    shares, best = vote(knn, y, query_emb)
    proba = pd.DataFrame(shares, index=names.copy(), columns=[str(c) for c in knn.classes_])
    return proba, validation, knn, best


def voters(n_neighbors: int, labels: np.ndarray) -> int:
    """The reference cells that vote: ``n_neighbors``, at most the cells per class.

    With more voters than the reference's cells per class (its cells over its classes), the
    votes follow the classes' sizes more than the cell: with as many voters as cells, every
    query cell gets the largest class.
    """
    n_classes = len(np.unique(labels))
    return max(1, min(n_neighbors, len(labels) // n_classes))


class NearestTieKNN(KNeighborsClassifier):
    """scikit-learn's kNN vote, a tie going to the tied label whose voter is nearest.

    What ``tl.annotate(method="knn", return_model=True)`` returns: its ``predict`` labels
    further cells as ``annotate`` labelled the query (:func:`vote`); ``predict_proba`` gives
    the vote shares, the confidences.
    """

    def fit(self, X: Any, y: Any) -> NearestTieKNN:
        """Fit as :class:`~sklearn.neighbors.KNeighborsClassifier`, keeping the labels."""
        self.labels_ = np.asarray(y)
        return super().fit(X, y)

    def predict(self, X: Any) -> np.ndarray:
        """The label of each cell of ``X``, ties to the nearest voter."""
        return self.classes_[vote(self, self.labels_, np.asarray(X))[1]]


def vote(knn: Any, labels: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vote shares of ``knn``'s classes for the cells ``emb``, and each cell's winner.

    ``labels``: the reference cells' labels ``knn`` was fitted on. A tie goes to the tied
    class whose voter is nearest, so no class wins a tie for its place in the alphabet.
    """
    _, idx = knn.kneighbors(emb)  # voters, nearest first
    codes = np.searchsorted(knn.classes_, labels)[idx]  # as indices into knn.classes_
    n, k = codes.shape
    votes = np.zeros((n, len(knn.classes_)))
    np.add.at(votes, (np.repeat(np.arange(n), k), codes.ravel()), 1)
    first = np.full(votes.shape, k)  # the rank of each class's nearest voter (k: none)
    np.minimum.at(first, (np.repeat(np.arange(n), k), codes.ravel()), np.tile(np.arange(k), n))
    best = np.lexsort((first, -votes), axis=1)[:, 0] if n else np.zeros(0, dtype=int)
    return votes / k, best
