"""Whether a model's AnnData codes its batches as the pretrained batch-dependent layers do."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from scvi import REGISTRY_KEYS

if TYPE_CHECKING:
    from ..module import TransformerModel
    from ._scgpt import ScGPT


def check_pretrained_batches(model: ScGPT, saved: list | None, source: Any) -> None:
    """``ValueError`` unless ``model.adata`` codes its batches as the checkpoint's layers.

    A checkpoint with batch-dependent layers (DSBN, batch tokens) has one set per batch, in
    the code order of the batches it was trained on (``saved``; ``None``: not recorded, as
    in official folders). Every cell must then have a batch (a registered ``batch_key``),
    and each batch registered for ``model.adata`` must have the code it had there, else its
    cells would silently use another batch's layers.
    """
    key = model.get_setup_arg("batch_key")
    if key is None:
        msg = (
            "The pretrained model has batch-dependent layers (trained with dsbn=True or "
            "use_batch_labels=True): set adata up with a batch_key naming the obs column of "
            f"each cell's batch, {type(model).__name__}.setup_anndata(adata, batch_key=...), "
            "then load again; or load with drop_batch_layers=True to start without those "
            "layers (as the official annotation recipe builds its model)."
        )
        raise ValueError(msg)
    mine = registered_batches(model)
    if saved is None:  # official folders: the layers' batches are not named, only counted
        n = int(model.module.config.num_batch_labels or 0)
        if len(mine) > n:
            msg = (
                f"The pretrained model has batch-dependent layers for {n} batches, but "
                f"adata.obs[{key!r}] holds {len(mine)} ({mine[:10]}): the cells of the others "
                "would have no layers. Load with drop_batch_layers=True to start without them."
            )
            raise ValueError(msg)
        return
    if keeps_layers_of(model, saved):
        return
    saved = [str(b) for b in saved]
    how = (
        f"{type(model).__name__}.load({str(source)!r}, adata), which registers adata with the "
        "saved batches, or "
        if isinstance(source, str | os.PathLike)
        else ""
    )
    msg = (
        f"The pretrained model has batch-dependent layers for the batches {saved[:10]} (in "
        f"this order), but adata.obs[{key!r}] was registered with the batches {mine[:10]}: "
        "cells would use the layers of other batches. Use "
        f"{how}make adata.obs[{key!r}] a pandas Categorical with categories {saved[:10]} "
        "(batches the model has no layers for cannot be used) and run setup_anndata again."
    )
    raise ValueError(msg)


def registered_batches(model: Any) -> list[str]:
    """The batches of a model's AnnData, in code order."""
    return [str(b) for b in model.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]


def keeps_layers_of(model: Any, saved: list | None) -> bool:
    """Whether a class that sizes its own batch layers keeps the checkpoint's (``saved``).

    Only where they are known to be for the same batches, in the same order: another run of
    these batches. The layers of unnamed batches (official folders) or of other batches would
    give cells the statistics of an unrelated batch at the same position.
    """
    if saved is None:
        return False
    mine = registered_batches(model)
    return mine == [str(b) for b in saved][: len(mine)]


def without_batch_layers(module: TransformerModel, report: dict[str, Any]) -> TransformerModel:
    """``module`` without batch tokens and DSBN; their weights join ``report["skipped"]``.

    The decoders that read the batch token shrink to the cell embedding alone and start afresh
    (``report["missing"]``), as the official recipes' loading of the weights whose name and
    shape fit leaves them.
    """
    from .._resolve import needs_batch_labels
    from ._io import rebuild_module

    if not needs_batch_labels(module):
        return module
    new, fresh = rebuild_module(module, use_batch_labels=False, domain_spec_batchnorm=False)
    dropped = set(module.state_dict()) - set(new.state_dict())
    report["skipped"] = sorted(set(report.get("skipped", [])) | dropped)
    report["missing"] = sorted(set(report.get("missing", [])) | set(fresh))
    return new
