"""Ranks of a DDP run: which process this is, and how many there are.

Outside ``torch.distributed`` (one process, or before Lightning sets up the process group) the
rank is Lightning's ``rank_zero_only.rank`` (0 by default) and the world size 1. The samplers
(:mod:`omicformer._core._samplers`,
:class:`~omicformer._core._chunk_sampler.ChunkBatchSampler`) call these through the module
(``_ranks.world_size()``), so tests can stand in for a rank.
"""

from __future__ import annotations

import torch


def global_rank() -> int:
    """Global rank of this process under DDP (0 when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_global_zero() -> bool:
    """Whether this process is global rank 0 (``save`` writes only there)."""
    return global_rank() == 0


def world_size() -> int:
    """Number of DDP processes (1 when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1
