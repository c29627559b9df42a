"""Fixtures of the ``_core`` tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from omicformer._core import _ranks


@pytest.fixture
def rank_shards(monkeypatch) -> Callable[[Iterable], list[list]]:
    """``rank_shards(sampler)``: what each of two DDP ranks draws from ``sampler``.

    The ranks are stood in for through ``_ranks`` (as the samplers read them); the world size
    stays 2 and the rank 1 for the rest of the test, as the test's ``monkeypatch`` leaves them.
    """

    def shards(sampler: Iterable, world: int = 2) -> list[list]:
        monkeypatch.setattr(_ranks, "world_size", lambda: world)
        out = []
        for rank in range(world):
            monkeypatch.setattr(_ranks, "global_rank", lambda r=rank: r)
            out.append(list(sampler))
        return out

    return shards
