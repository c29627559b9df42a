"""Per-batch random generators for collators (no Lightning import: ``module/`` code uses it).

The rule every collator follows: training batches draw from torch's global generator, which the
shared runner seeds for each batch from ``(random_state, epoch, batch number)`` around the
collate call (``omicformer._core._resume``), so a batch's draws do not depend on DataLoader
workers, prefetching, the number of devices or a resume; validation batches are a fixed function
of a seed and the batch's first item.
"""

from __future__ import annotations

import numpy as np
import torch


def collate_rng(seed: int | None = None, key: int = 0) -> np.random.Generator:
    """The random generator of one batch, for collators (masking, subsampling, ties).

    Parameters
    ----------
    seed
        ``None`` (training): seeded by one draw from torch's global generator, which the runner
        seeds per batch from ``(random_state, epoch, batch number)``. An integer (validation):
        a fixed function of ``(seed, key)``, so validation losses are comparable across
        epochs.
    key
        With an integer ``seed``: what identifies the batch, e.g. the index of its first item.
    """
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    return np.random.default_rng([int(seed), int(key)])


def collate_generator(seed: int | None = None, key: int = 0) -> torch.Generator:
    """:func:`collate_rng` as a CPU :class:`torch.Generator`."""
    return torch.Generator().manual_seed(int(collate_rng(seed, key).integers(2**62)))
