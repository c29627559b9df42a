"""Inference over chunks of cells on several devices or nodes, through Lightning's ``Trainer.predict``.

The work is split into chunks (e.g. 8192 cells read, tokenised and embedded together). Lightning
starts the processes (DDP: one per device, on one or several nodes; a script re-run per device,
as for training) and sets up the devices and the process group; chunk ``c`` runs on rank
``c % world_size``. After every round of ``world_size`` chunks the results are gathered (to all
ranks for an in-memory result, to rank 0 for a file), so memory per process stays at one round
and every chunk is computed exactly as a single process computes it: the distributed result
equals the single-process one, rows in their original order.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

if TYPE_CHECKING:
    from ._io import ChunkOutput

#: ``work(chunk, device) -> (rows, values)``
ChunkWork = Callable[[int, torch.device], tuple[np.ndarray, np.ndarray]]


class _ChunkPredictor(pl.LightningModule):
    """Runs ``work`` on this rank's chunks in ``predict_step`` and gathers every round."""

    def __init__(
        self, module: torch.nn.Module, work: ChunkWork, n_chunks: int, output: ChunkOutput
    ) -> None:
        super().__init__()
        self.module = module
        self.work, self.n_chunks, self.output = work, int(n_chunks), output
        self.receives = False

    def on_predict_start(self) -> None:
        # a file is written by rank 0 only; an in-memory result is filled on every rank
        self.receives = not self.output.to_file or self.global_rank == 0
        if self.receives:
            self.output.__enter__()

    def predict_step(self, batch: Any, batch_idx: int) -> None:
        rank, world = self.global_rank, self.trainer.world_size
        chunk = int(batch) * world + rank
        result = self.work(chunk, self.device) if chunk < self.n_chunks else None
        if world == 1:
            results = [result]
        elif self.output.to_file:
            results = [None] * world if rank == 0 else None
            torch.distributed.gather_object(result, results, dst=0)
        else:
            results = [None] * world
            torch.distributed.all_gather_object(results, result)
        if self.receives:
            for item in results or []:
                if item is not None:
                    self.output.write(*item)


def predict_chunks(
    work: ChunkWork,
    n_chunks: int,
    module: torch.nn.Module,
    output: ChunkOutput,
    *,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """Compute ``work(c, device)`` for every chunk ``c`` with Lightning; the gathered result.

    Parameters
    ----------
    work
        Computes chunk ``c`` on ``device``: ``(rows, values)``, ``values`` the result at
        ``rows``. Pure function of ``c`` (no state shared between chunks).
    n_chunks
        Number of chunks.
    module
        The :class:`torch.nn.Module` that ``work`` uses; Lightning moves it to each process's
        device (it is moved back and its mode restored afterwards).
    output
        Where results go (:class:`~omicformer._core._io.ChunkOutput`: memory or ``.npy``).
    accelerator, devices, num_nodes, strategy
        :class:`lightning.pytorch.Trainer` settings; several devices or nodes run DDP, one
        process per device (run from a script, not a notebook).
    progress
        Lightning's progress bar (one step per round of chunks).

    Returns
    -------
    The whole result on every rank (a read-only memory map of the file with ``out_file``; on
    several nodes the folder must then be shared).
    """
    from ._quiet import quiet_lightning

    param = next(module.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    was_training = module.training
    plan = _ChunkPredictor(module, work, n_chunks, output)
    with warnings.catch_warnings(), quiet_lightning(progress):
        for pattern in (".*does not have many workers.*", ".*predict_dataloader.*",
                        ".*treespec.*", ".*predict returned None.*"):  # fmt: skip
            warnings.filterwarnings("ignore", pattern)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision="32-true",  # the work picks its own autocast, as in a single process
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            use_distributed_sampler=False,  # chunks are assigned to ranks in predict_step
        )
        refuse_started_processes(trainer, strategy, "the embeddings")
        try:
            # the number of rounds is known once the world size is (before launching too)
            world = int(trainer.world_size)
            rounds = torch.utils.data.DataLoader(range(-(-n_chunks // world)), batch_size=None)
            trainer.predict(plan, rounds, return_predictions=False)
        except BaseException as err:
            if plan.receives:
                output.__exit__(type(err), err, err.__traceback__)
            raise
        finally:
            module.to(home).train(was_training)
    if plan.receives:
        output.__exit__(None, None, None)  # rank 0 renames the finished file into place
    trainer.strategy.barrier("predict_chunks")
    return output.result()


# ---------------------------------------------------------------------------- launchers
def refuse_started_processes(trainer: pl.Trainer, strategy: Any, lost: str) -> None:
    """``ValueError`` when ``trainer`` would run in processes started from this one.

    Lightning's ``ddp_spawn``, ``ddp_fork`` and ``ddp_notebook`` (and ``"auto"`` with several
    devices in a notebook or an interactive session) start the processes from the calling
    one, and send back only rank 0's weights: ``lost`` (what would not come back, e.g. "the
    training history") is named in the message. ``ddp_spawn`` could not even start training,
    its processes failing on the loaders' generators. Call before anything changes.
    """
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    if not isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        return
    which = f"strategy={strategy!r}"
    if strategy == "auto":  # Lightning's choice for several devices in a notebook
        which += " (with several devices in a notebook or an interactive session)"
    msg = (
        f"{which} runs DDP in processes started from this one, which send back only the "
        f"weights, not {lost}. Run a script with strategy='ddp' instead (Lightning then starts "
        "the script once per device; see the Scaling guide, 'Several GPUs: DDP'), or use "
        "devices=1."
    )
    raise ValueError(msg)


def world_size_of(
    accelerator: str, devices: int | str | list[int], num_nodes: int, strategy: Any
) -> int:
    """The number of processes Lightning would train with these settings (devices x nodes).

    Resolved by Lightning itself (``"auto"``, ``-1``, device lists), before any process starts,
    on a copy of a ``Strategy`` object (a Trainer takes one instance once). Settings Lightning
    refuses give 1: the training that follows reports them, with its own clearer checks first
    (an ``accelerator`` this machine lacks).
    """
    from ._quiet import quiet_lightning

    if devices in (1, "1") and num_nodes == 1:
        return 1
    try:
        strategy = strategy if isinstance(strategy, str) else copy.deepcopy(strategy)
        with warnings.catch_warnings(), quiet_lightning(False):
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                                 strategy=strategy, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    except Exception:
        return 1
    return int(trainer.world_size)
