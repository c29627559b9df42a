"""Progress bars (tqdm; the notebook widget when ipywidgets is installed)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", disable: bool = False
):
    """Wrap ``iterable`` in a tqdm progress bar.

    ``tqdm.auto`` is used only when ipywidgets is importable; otherwise it would warn in every
    notebook without widgets, so the plain text bar is used instead.
    """
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)


#: What the training bar says is being trained, before Lightning's "Epoch i/n" (an ensemble's
#: ``"classifier 1/2"``); ``""``: Lightning's own bar.
RUN_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("run_label", default="")
