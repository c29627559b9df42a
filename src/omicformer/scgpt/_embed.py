"""Cell embedding engine: AnnData rows -> tokens -> transformer -> L2-normalised ``<cls>`` output.

Differences from the official ``embed_data`` that do not change the numbers: cells are grouped
into length buckets (little padding; SDPA runs unmasked on full buckets), the matrix is read in
chunks (works on ``backed="r"`` AnnData), and on GPU the forward runs under fp16 autocast as the official one.
Chunks are also the unit of output (written one by one to a ``.npy`` memory map for results
larger than RAM) and of distribution (spread over Lightning processes, the result equal to a
single process's).
"""

from __future__ import annotations

import contextvars
import functools
import os
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from .._core._anndata import RowReader, check_values, iter_row_chunks
from .._core._checks import check_int
from .._core._device import inference_autocast, resolve_device
from .._core._io import ChunkOutput, check_not_input
from .._core._progress import progress as _progress
from .._core._warnings import warn_caller
from ._tokenize import (
    check_gene_selection,
    check_max_len,
    length_buckets,
    pad_batch,
    tokenize_rows,
)

if TYPE_CHECKING:
    from anndata import AnnData

    from ._vocab import GeneVocab
    from .module import TransformerModel


F = TypeVar("F", bound=Callable[..., Any])
#: While a ``tl`` function runs: whether it has warned of cells without a vocabulary gene
#: (``"warned"``), and whether the genes read are those two AnnData share (``"shared"``).
_EMPTY_CELLS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "empty_cells", default=None
)


def genes_read_are_shared() -> None:
    """Within a decorated call: the genes read are those two AnnData share, as warnings say.

    ``tl.annotate(reference=...)`` reads each side's vocabulary genes that the other side has,
    so a query cell can express vocabulary genes and still none that is read.
    """
    state = _EMPTY_CELLS.get()
    if state is not None:
        state["shared"] = True


def vocab_chunks(
    adata: AnnData, layer: str | None, cols: np.ndarray, chunk_size: int = 4096
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield ``(row indices, CSR of the vocabulary columns)`` chunk by chunk, validated.

    Raises ``ValueError`` for NaN/inf or negative values; warns about cells that express none
    of the vocabulary genes (:func:`vocab_columns`). Entries are non-zero with sorted indices.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    for idx, chunk in iter_row_chunks(adata, layer, chunk_size):
        yield idx, vocab_columns(chunk, int(idx[0]), cols=cols, where=where)


def vocab_columns(
    chunk: sp.csr_matrix, first_row: int, *, cols: np.ndarray, where: str = "adata.X"
) -> sp.csr_matrix:
    """The vocabulary columns ``cols`` of a chunk of cells: non-zero entries, sorted, validated.

    Raises ``ValueError`` for NaN/inf or negative values (rows named from ``first_row``, the
    chunk's first row in the file). A cell that expresses none of the vocabulary genes is kept
    and becomes ``<cls>`` alone, as in the official ``tokenize_batch``, so all such cells get
    one and the same embedding; a ``UserWarning`` counts them (once a call within a ``tl``
    function: :func:`empty_cells_warned_once`). Also the
    :class:`~omicformer._core._ondisk.ChunkedRows` transform of streaming training.
    """
    check_values(chunk, where, first_row)
    sub = sp.csr_matrix(chunk[:, cols], dtype=np.float32)
    sub.eliminate_zeros()
    sub.sort_indices()
    empty = np.flatnonzero(np.diff(sub.indptr) == 0)
    state = _EMPTY_CELLS.get()
    if empty.size and not (state is not None and state["warned"]):
        once = "" if state is None else " (Warned once per call.)"
        shared = state is not None and state["shared"]
        genes = ("the genes the model knows that reference and query share" if shared
                 else "the genes in the model's vocabulary")  # fmt: skip
        fix = ("each to the genes both share" if shared
               else "to the vocabulary genes")  # fmt: skip
        warn_caller(
            f"{empty.size} of {sub.shape[0]} cells read together (e.g. row "
            f"{first_row + int(empty[0])}) express none of {genes}: each is read as <cls> "
            "alone (as the official scGPT does), so they all get the same embedding. To leave "
            f"them out, subset {fix} and run sc.pp.filter_cells(adata, min_genes=1) first."
            f"{once}"
        )
        if state is not None:
            state["warned"] = True
    return sub


def empty_cells_warned_once(func: F) -> F:
    """Decorate a ``tl`` function: cells without a vocabulary gene are warned of once a call.

    The warning comes at the first read of cells (a chunk) that holds such cells, before any
    result is written, with that read's counts; later reads of the call (the next chunks,
    fine-tuning's passes over the same cells) add none. Within another decorated call, the
    outer one's state counts. Outside such calls (the model classes) every read warns.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _EMPTY_CELLS.get() is not None:
            return func(*args, **kwargs)
        token = _EMPTY_CELLS.set({"warned": False, "shared": False})
        try:
            return func(*args, **kwargs)
        finally:
            _EMPTY_CELLS.reset(token)

    return wrapper  # type: ignore[return-value]


def cell_seeds(X: sp.csr_matrix, gene_ids: np.ndarray, random_state: int) -> np.ndarray:
    """Per-cell seeds ``(random_state, crc32 of the cell's genes and values)``.

    Binning ties and gene subsampling of a cell then depend only on its expression and the seed:
    not on cell order, chunking, names, or which other cells are embedded with it. ``X`` must
    hold only non-zero entries with sorted indices.
    """
    seeds = np.empty((X.shape[0], 2), dtype=np.int64)
    seeds[:, 0] = random_state
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        key = gene_ids[X.indices[s:e]].tobytes() + np.asarray(X.data[s:e], np.float32).tobytes()
        seeds[i, 1] = zlib.crc32(key)
    return seeds


@torch.no_grad()
def encode_tokens(
    module: TransformerModel,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    batch_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cell embeddings (not normalised) of one padded batch."""
    genes = batch["genes"].to(device, non_blocking=True)
    values = batch["values"].to(device, non_blocking=True)
    mask = batch["padding_mask"].to(device, non_blocking=True)
    if batch_labels is not None:
        batch_labels = batch_labels.to(device)
    with inference_autocast(device):
        out = module._encode(genes, values, mask, batch_labels)
        emb = module.get_cell_embedding(out, values, mask)
    return emb.float()


def embed_cells(
    module: TransformerModel,
    vocab: GeneVocab,
    adata: AnnData,
    *,
    gene_ids: np.ndarray,
    layer: str | None = None,
    batch_size: int = 64,
    max_len: int | None = 1200,
    n_bins: int | None = 51,
    pad_value: float | None = None,
    device: str | torch.device = "auto",
    random_state: int = 0,
    chunk_size: int = 8192,
    progress: bool = True,
    normalize: bool = True,
    batch_labels: np.ndarray | None = None,
    out_file: str | os.PathLike[str] | None = None,
    out_key: str = "X_scgpt",
    accelerator: str | None = None,
    devices: int | str | list[int] | None = None,
    strategy: str = "auto",
    num_nodes: int = 1,
    gene_selection: str = "random",
) -> np.ndarray:
    """Embed every cell of ``adata``; returns ``(n_obs, d_model)`` float32.

    ``gene_ids`` gives the vocabulary id of each var (``-1``: not in the vocabulary, dropped).
    Raises ``ValueError`` (before anything is written anywhere) on NaN/inf or negative values;
    a cell with no expressed vocabulary gene is embedded as ``<cls>`` alone, with a warning.
    ``batch_labels`` (integer code per cell) are passed to models with batch tokens or
    domain-specific batch norm; every minibatch then holds cells of a single batch, as DSBN
    requires.

    Cells are read, tokenised and embedded ``chunk_size`` at a time (rounded to whole
    batches); of a view (e.g. ``adata[mask]`` of a ``backed="r"`` file) only the rows of the
    chunk are read (:class:`~omicformer._core._anndata.RowReader`). ``out_file``: chunks go to
    that file, a ``.npy`` array through a memory map
    (:class:`~omicformer._core._io.NpyChunkWriter`) or ``obsm[out_key]`` of a new ``.h5ad``/
    ``.zarr`` AnnData file with ``adata``'s ``obs_names``
    (:class:`~omicformer._core._obsm_out.AnnDataChunkWriter`); the file appears only when
    complete, and the array is returned read-only (memory map, or zarr array).
    ``accelerator``/``devices``/``strategy``/``num_nodes`` (any of them set): the chunks are
    spread over Lightning processes (:func:`~omicformer._core._distributed.predict_chunks`),
    each chunk embedded exactly as a single process embeds it; every rank returns the whole
    result in the original order. ``gene_selection``: which genes a cell with more than
    ``max_len - 1`` keeps (``tokenize_rows``).
    """
    check_gene_selection(gene_selection)
    distributed = _check_embed_args(
        max_len, batch_size, chunk_size, device, accelerator, devices, strategy, num_nodes
    )
    chunk_size = batch_size * max(1, chunk_size // batch_size)  # whole buckets per chunk
    check_not_input(adata, out_file)
    output = ChunkOutput(
        (adata.n_obs, module.config.d_model), out_file, obs_names=adata.obs_names, key=out_key
    )  # checks the path
    work = _ChunkEmbedder(
        module, vocab, adata, gene_ids=gene_ids, layer=layer, batch_size=batch_size,
        max_len=max_len, n_bins=n_bins, random_state=random_state, chunk_size=chunk_size,
        normalize=normalize, batch_labels=batch_labels, gene_selection=gene_selection,
        pad_value=module.config.pad_value if pad_value is None else pad_value,
    )  # fmt: skip
    if distributed and work.n_chunks:
        from .._core._distributed import predict_chunks

        return predict_chunks(
            work, work.n_chunks, module, output, num_nodes=num_nodes, strategy=strategy,
            accelerator="auto" if accelerator is None else accelerator,
            devices="auto" if devices is None else devices, progress=progress,
        )  # fmt: skip
    dev = resolve_device(device)
    was_training = module.training
    home = next(module.parameters()).device  # the caller's model goes back there afterwards
    module.eval().to(dev)
    n_batches = -(-adata.n_obs // batch_size)
    work.bar = _progress(
        range(n_batches), total=n_batches, desc="scGPT embed", disable=not progress
    )
    try:
        with output:
            for c in range(work.n_chunks):
                output.write(*work(c, dev))
    finally:
        work.bar.close()
        work.bar = None
        module.to(home).train(was_training)
    return output.result()


def _check_embed_args(
    max_len: int | None,
    batch_size: int,
    chunk_size: int,
    device: str | torch.device,
    accelerator: str | None,
    devices: int | str | list[int] | None,
    strategy: str,
    num_nodes: int,
) -> bool:
    """Validate ``embed_cells`` arguments; whether Lightning's processes are asked for."""
    check_max_len(max_len)
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size), ("num_nodes", num_nodes)):  # fmt: skip
        check_int(name, value)
    distributed = not (accelerator is None and devices is None and strategy == "auto" and num_nodes == 1)  # fmt: skip
    if distributed and not (isinstance(device, str) and device == "auto"):
        msg = (
            f"device={device!r} and accelerator/devices/strategy/num_nodes were both given: pass "
            "device= to embed on one device in this process, or accelerator=, devices= (and "
            "strategy=, num_nodes=) to embed with Lightning on several."
        )
        raise ValueError(msg)
    return distributed


class _ChunkEmbedder:
    """Embeds chunk ``c`` of ``adata`` (rows ``c * chunk_size`` onwards): the unit of work.

    A chunk's embeddings depend only on the chunk (its length buckets, per-cell seeds), so any
    process embedding chunk ``c`` gets what a single process gets.
    """

    def __init__(
        self,
        module: TransformerModel,
        vocab: GeneVocab,
        adata: AnnData,
        *,
        gene_ids: np.ndarray,
        layer: str | None,
        batch_size: int,
        max_len: int | None,
        n_bins: int | None,
        pad_value: float,
        random_state: int,
        chunk_size: int,
        normalize: bool,
        batch_labels: np.ndarray | None,
        gene_selection: str = "random",
    ) -> None:
        self.module, self.vocab, self.adata, self.layer = module, vocab, adata, layer
        self.gene_selection = gene_selection
        self.cols = np.flatnonzero(gene_ids >= 0)
        self.col_ids = gene_ids[self.cols]
        self.batch_size, self.max_len, self.n_bins = batch_size, max_len, n_bins
        self.pad_value, self.random_state, self.normalize = pad_value, random_state, normalize
        self.chunk_size, self.batch_labels = chunk_size, batch_labels
        self.where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        self.n_chunks = -(-adata.n_obs // chunk_size)
        self.bar = None
        self._reader: tuple[int, RowReader] | None = None

    @property
    def reader(self) -> RowReader:
        """Reads the rows of one chunk (of a view too: only its rows); one per process."""
        if self._reader is None or self._reader[0] != os.getpid():
            self._reader = (os.getpid(), RowReader(self.adata, self.layer))
        return self._reader[1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __call__(self, c: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        start = c * self.chunk_size
        stop = min(start + self.chunk_size, self.adata.n_obs)
        idx = np.arange(start, stop)
        chunk = self.reader.read(start, stop)
        sub = vocab_columns(chunk, start, cols=self.cols, where=self.where)
        del chunk
        cells = tokenize_rows(
            sub, self.col_ids, cls_id=self.vocab.cls_id, pad_value=self.pad_value,
            n_bins=self.n_bins, max_len=self.max_len, gene_selection=self.gene_selection,
            row_seeds=cell_seeds(sub, self.col_ids, self.random_state),
        )  # fmt: skip
        lengths = np.fromiter((len(cell.genes) for cell in cells), dtype=np.int64)
        out = np.empty((len(idx), self.module.config.d_model), dtype=np.float32)
        for b, labels in _buckets(lengths, self.batch_size, self.batch_labels, idx):
            batch = pad_batch([cells[i] for i in b], pad_id=self.vocab.pad_id, pad_value=self.pad_value)  # fmt: skip
            out[b] = encode_tokens(self.module, batch, device, labels).cpu().numpy()
            if self.bar is not None:
                self.bar.update(1)
        if self.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12)
        return idx, out


def _buckets(
    lengths: np.ndarray, batch_size: int, batch_labels: np.ndarray | None, idx: np.ndarray
):
    """Length buckets, within each batch label when labels are given."""
    if batch_labels is None:
        for b in length_buckets(lengths, batch_size):
            yield b, None
        return
    codes = np.asarray(batch_labels)[idx]
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        for b in length_buckets(lengths[members], batch_size):
            yield members[b], torch.full((len(b),), int(code), dtype=torch.long)
