"""Progress bars (tqdm; auto-switches to the notebook widget when available)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", disable: bool = False
):
    """Wrap ``iterable`` in a tqdm progress bar."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)
