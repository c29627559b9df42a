"""scGPT tools: functions that take ``adata`` and write results to ``obsm``/``obs``/``uns``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .._core._anndata import check_layer, check_obs_key, check_uns, raw_if_scaled
from .._core._checks import check_file_key, check_key, check_seed
from .._core._io import check_not_input, check_out_path
from ._annotate import annotate
from ._embed import embed_cells, empty_cells_warned_once
from ._genes import (
    case_ignored,
    match_genes,
    match_report,
    symbol_column,
    warn_if_raw_has_more_genes,
)
from ._integrate import integrate
from ._perturb import predict_perturbation
from ._perturb_baselines import perturbation_baseline
from ._perturb_eval import evaluate_perturbation
from ._resolve import (
    batch_codes,
    gene_selection_of,
    known_batches,
    max_len_of,
    n_bins_of,
    needs_batch_labels,
    resolve_model,
)
from ._tokenize import check_max_len

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "annotate",
    "embed",
    "evaluate_perturbation",
    "integrate",
    "perturbation_baseline",
    "predict_perturbation",
]


@empty_cells_warned_once
def embed(
    adata: AnnData,
    model: Any = "default",
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    batch_key: str | None = None,
    key_added: str = "X_scgpt",
    batch_size: int = 64,
    max_len: int | None = None,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    out_file: str | os.PathLike[str] | None = None,
    chunk_size: int = 8192,
    accelerator: str | None = None,
    devices: int | str | list[int] | None = None,
    strategy: str = "auto",
    num_nodes: int = 1,
    copy: bool = False,
) -> AnnData | None:
    """Embed cells with scGPT (zero-shot): the L2-normalised ``<cls>`` output of the last layer.

    Follows the official ``scgpt.tasks.embed_data``: genes outside the model's vocabulary are
    dropped; a cell becomes ``<cls>`` plus its non-zero genes, with values ``pad_value`` then
    the per-cell 51-bin quantile bins of its non-zero values (an official folder: 51 bins
    whatever its ``args.json`` says, as ``embed_data``; other models: the bins they were
    trained with); cells with more than ``max_len``
    tokens keep ``<cls>`` and a random subset of genes (with a model fine-tuned by
    :func:`annotate` or :func:`integrate`, or its saved folder: their most highly expressed
    genes, as the model was trained; see ``ScGPT.gene_selection``). Cells are batched by length (so little
    padding is computed) and the matrix is read in chunks, so ``backed="r"`` AnnData works
    without loading the matrix; with ``out_file`` the embeddings do not have to fit in memory
    either, and with ``devices``/``num_nodes`` the chunks are spread over GPUs or nodes.

    Parameters
    ----------
    adata
        Cells x genes with raw counts (or any non-negative expression: binning is per cell and
        rank-based) in ``X`` or ``layer``. Gene symbols in ``var_names`` or ``var[gene_key]``.
    model
        ``"default"`` (small model shipped with omicformer), a path to an official scGPT folder
        (``args.json``, ``vocab.json``, ``best_model.pt``, e.g. ``scGPT_human``), a folder saved
        by :meth:`~omicformer.scgpt.model.ScGPT.save`, or an
        :class:`~omicformer.scgpt.model.ScGPT` instance.
    layer
        Layer holding the expression; ``None`` uses ``adata.X``, or ``adata.raw`` (with a
        warning) when ``X`` holds scaled values (negative ones: scanpy's ``sc.pp.scale``) and
        ``adata.raw`` none. A ``backed="r"`` file's ``X`` is read as it is (scaled values are
        refused): pass ``layer=`` or embed ``adata.raw.to_adata()``.
    gene_key
        ``var`` column with gene symbols; ``None`` uses ``var_names``, or, when they match
        too few of the model's genes (Ensembl ids), the ``var`` column that matches the most
        (e.g. CELLxGENE's ``feature_name``; a warning names it). Symbols are matched as
        written, or ignoring case when most of them match only so (mouse ``"Cd3e"`` for
        ``"CD3E"``; a warning says so).
    batch_key
        ``obs`` column with batch labels, needed (only) by models with batch-dependent layers
        (trained with ``dsbn=True`` or ``use_batch_labels=True``): each cell then uses its
        batch's layers (with DSBN, its batch's running statistics). Batches are matched by name
        to those the model was trained on (as recorded by
        :meth:`~omicformer.scgpt.model.ScGPT.save`).
    key_added
        ``obsm`` key receiving the embedding. Where it goes to a file (an ``.h5ad``/``.zarr``
        ``out_file``, or a backed ``adata``) it must not contain ``"/"``, which HDF5 and zarr
        read as nested groups.
    batch_size
        Cells per forward pass.
    max_len
        Maximum tokens per cell including ``<cls>``; an integer >= 2. ``None``: the length the
        model embeds with, 1200 (the official default) for the default model and official
        checkpoints, 256 for a model fine-tuned by :func:`annotate` or :func:`integrate` (or
        its saved folder), so that the result equals the model's own
        ``get_latent_representation``.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        On GPU the forward runs under fp16 autocast, as the official ``embed_data``.
    random_state
        Seed for binning ties and for subsampling genes of cells longer than ``max_len``.
    progress
        Show a progress bar.
    out_file
        Write the embeddings to a file chunk by chunk (for outputs larger than memory)
        instead of into ``adata.obsm``; the path is recorded in ``uns``. Its suffix picks the
        format:

        - ``.npy``: a NumPy array (through a memory map); read it with
          ``np.load(out_file, mmap_mode="r")``;
        - ``.h5ad`` or ``.zarr``: a new AnnData file with ``adata``'s ``obs_names`` (no ``X``)
          and the embeddings in ``obsm[key_added]``; ``anndata.read_h5ad``/``read_zarr``
          load it (e.g. to copy ``obsm`` into ``adata``), ``h5py.File(out_file)["obsm"]`` or
          ``zarr.open(out_file)["obsm"]`` read rows of it without loading it.

        The file appears only when complete (written under a temporary name in the same
        folder, then renamed; an older file or zarr store of that name is replaced); after an
        error (e.g. a full disk) no file is left under either name and ``adata`` is unchanged.
        It cannot be the file ``adata`` is read from. A view of a backed AnnData (e.g.
        ``atlas[mask]``) needs ``out_file`` and gets no ``uns`` record (anndata cannot store
        one there).
    chunk_size
        Cells read, tokenised and embedded at a time (memory besides the model), and the unit
        spread over devices.
    accelerator, devices, strategy, num_nodes
        Embed with Lightning (``Trainer.predict``) on several devices or nodes, e.g.
        ``accelerator="gpu", devices=4`` (DDP: run from a script, as for training). Every
        process gets the result a single process computes, cells in their original order.
        Leave ``device`` at ``"auto"`` then.
    copy
        Return a copy with the results instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Sets the following fields:

    ``adata.obsm[key_added]``
        ``(n_obs, d_model)`` float32 cell embeddings, unit L2 norm (not with ``out_file``).
    ``adata.uns["scgpt"][key_added]``
        ``params`` used, the model description, how many genes matched the vocabulary
        (``n_genes_matched`` of ``n_genes_total``) and ``case_ignored`` (symbols matched
        ignoring case, see :func:`~omicformer.scgpt.pp.match_vocab`); with ``out_file``, also ``"out_file"``: the path of the file holding the embeddings
        (rows in the order of ``adata.obs_names``).

    Examples
    --------
    >>> import scanpy as sc
    >>> from omicformer import datasets, scgpt
    >>> adata = datasets.pbmc68k_reduced()
    >>> scgpt.tl.embed(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_scgpt")
    >>> sc.tl.umap(adata)

    An atlas larger than memory, embedded on 4 GPUs into a file:

    >>> import anndata, numpy as np
    >>> atlas = anndata.read_h5ad("atlas.h5ad", backed="r")
    >>> scgpt.tl.embed(atlas, out_file="atlas_scgpt.npy", accelerator="gpu", devices=4)
    >>> z = np.load(atlas.uns["scgpt"]["X_scgpt"]["out_file"], mmap_mode="r")

    Or into ``obsm`` of a new h5ad file, whose rows can be read without loading it:

    >>> import h5py
    >>> scgpt.tl.embed(atlas, out_file="atlas_scgpt.h5ad")
    >>> first = h5py.File("atlas_scgpt.h5ad", "r")["obsm/X_scgpt"][:1000]

    References
    ----------
    Cui et al. (2024), scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    check_key(key_added)
    check_seed(random_state)
    check_layer(adata, layer)
    check_uns(adata, "scgpt")
    max_len = check_max_len(max_len)
    if copy and adata.isbacked:
        msg = (
            "copy=True is not supported for backed AnnData; use copy=False (writes obsm in memory)."
        )
        raise ValueError(msg)
    if adata.is_view and adata.isbacked and out_file is None:
        msg = (
            "adata is a view of a backed AnnData, which cannot hold obsm; pass out_file= (a "
            ".npy path, written in chunks) or load the view first with adata.to_memory()."
        )
        raise ValueError(msg)
    check_obs_key(adata, batch_key, "batch_key")
    if out_file is not None:
        out_file = os.path.abspath(check_out_path(out_file))  # before loading the model
        check_not_input(adata, out_file)
    if out_file is not None and not out_file.endswith(".npy"):  # obsm[key_added] of a new file
        check_file_key(key_added, where=f"out_file={out_file!r}")
    elif adata.isbacked:  # the results stay with the file, which only an .h5ad can hold
        check_file_key(key_added, where="a backed AnnData's .h5ad file")
    source = raw_if_scaled(adata, layer, gene_key, "adata")
    module, vocab, description = resolve_model(model, task="embed")
    gene_key = symbol_column(source, vocab, gene_key, "adata")
    gene_ids = match_genes(source, vocab, gene_key)
    warn_if_raw_has_more_genes(adata, source is not adata, layer, gene_key, vocab,
                               int((gene_ids >= 0).sum()))  # fmt: skip
    codes = _batch_codes(model, module, adata, batch_key)
    selection = gene_selection_of(model)
    max_len = max_len_of(model) if max_len is None else max_len
    emb = embed_cells(
        module, vocab, source, gene_ids=gene_ids, layer=layer, batch_size=batch_size,
        max_len=max_len, n_bins=n_bins_of(model, module), device=device,
        random_state=random_state,
        progress=progress, batch_labels=codes, out_file=out_file, out_key=key_added,
        chunk_size=chunk_size, gene_selection=selection,
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
    )  # fmt: skip
    if adata.is_view and adata.isbacked:
        return None  # anndata cannot store uns in a view of a backed file: the file is all
    adata = adata.copy() if copy else adata
    if out_file is None:
        adata.obsm[key_added] = emb
    uns = adata.uns.setdefault("scgpt", {})
    uns[key_added] = {
        **({} if out_file is None else {"out_file": out_file}),
        "params": {
            "model": description,
            "layer": layer,
            "gene_key": gene_key,
            "batch_key": batch_key,
            "batch_size": batch_size,
            "max_len": max_len,
            "gene_selection": selection,
            "random_state": random_state,
            "chunk_size": chunk_size,
        },
        **match_report(gene_ids, case_ignored(source, vocab, gene_key)),
    }
    return adata if copy else None


def _batch_codes(model: Any, module: Any, adata: AnnData, batch_key: str | None):
    """Batch code per cell for models with batch-dependent layers (``None`` for the others)."""
    if not needs_batch_labels(module):
        return None
    if batch_key is None:
        msg = (
            "This model has batch-dependent layers (trained with dsbn=True or "
            "use_batch_labels=True); pass batch_key= naming the adata.obs column with the batch "
            "of each cell."
        )
        raise ValueError(msg)
    import pandas as pd

    values = adata.obs[batch_key].to_numpy()
    mapping = known_batches(model)
    if mapping is None:  # e.g. an official checkpoint: batches in their sorted order
        mapping = list(pd.Categorical(values).categories)
    c = module.config
    if c.num_batch_labels is not None and len(mapping) > c.num_batch_labels:
        msg = (
            f"adata.obs[{batch_key!r}] has {len(mapping)} batches but the model has layers for "
            f"{c.num_batch_labels}."
        )
        raise ValueError(msg)
    return batch_codes(values, mapping, batch_key)
