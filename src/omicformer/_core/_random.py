"""Per-batch random generators for collators (no Lightning import: ``module/`` code uses it).

The rule every collator follows: training batches draw from torch's global generator, which the
shared runner seeds for each batch from ``(random_state, epoch, batch number)`` around the
collate call (``omicformer._core._resume``), so a batch's draws do not depend on DataLoader
workers, prefetching, the number of devices or a resume; validation batches are a fixed function
of a seed and the batch's first item.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

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


#: The seed of CUDA's generators that no call seeded (torch's ``default_rng_seed_val``).
_CUDA_DEFAULT_SEED = 67280421310721
#: torch's record of the CUDA seeds queued before CUDA starts (``torch.cuda._lazy_seed_tracker``).
_TRACKED = ("manual_seed_all_cb", "manual_seed_cb", "call_order")
#: What ``lightning.seed_everything`` leaves in the environment for the processes it seeds.
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def kept_global_rng() -> Iterator[None]:
    """Run a block that seeds the global generators, then give the caller's state back.

    Training seeds Python's ``random``, NumPy's and torch's global generators (and CUDA's)
    from ``random_state`` and sets Lightning's seed variables; a seeded function must not
    reseed the user's own draws after it. Their states (and the variables) are restored on
    leaving, also after an error. CUDA's states are read only where CUDA is initialised
    (reading them would initialise it). Where it is not yet, the seeding calls the user queued
    for it (``torch.manual_seed``, ``torch.cuda.manual_seed``) are kept, and those queued inside
    dropped; where the block started CUDA, its generators are seeded as the user's queued calls
    would have seeded them.
    """
    import random

    state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is the point)
    torch_state = torch.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    # CUDA not started: the seeds the user queued for it (torch.manual_seed, torch.cuda.manual_seed)
    tracker = None if cuda else getattr(torch.cuda, "_lazy_seed_tracker", None)
    user_queue = None
    if tracker is not None and hasattr(tracker, "call_order"):
        user_queue = {k: getattr(tracker, k, None) for k in _TRACKED}
        user_queue["call_order"] = list(tracker.call_order)
    user_seed = torch.initial_seed()
    env = {k: os.environ.get(k) for k in _SEED_ENV}
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)  # noqa: NPY002
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        elif user_queue is not None and not torch.cuda.is_initialized():
            for key, value in user_queue.items():  # the seeds queued inside are dropped
                setattr(tracker, key, value)
        elif user_queue is not None:  # started inside: seeded as the user's queue would have
            torch.cuda.manual_seed_all(_CUDA_DEFAULT_SEED)
            with torch.cuda.device(0):  # the device current when CUDA starts, before any choice
                for queued in user_queue["call_order"]:
                    if queued:
                        queued[0]()
        else:  # another torch: seeds CUDA if started inside, else queues the seed again
            torch.cuda.manual_seed_all(user_seed)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_R = TypeVar("_R")


def keeps_global_rng(fn: Callable[..., _R]) -> Callable[..., _R]:
    """``fn`` seeds the global generators; its caller gets its own states back afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        with kept_global_rng():
            return fn(*args, **kwargs)

    return wrapper
