"""Matplotlib plumbing shared by the ``pl`` namespaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (5, 3.5)) -> Axes:
    """``ax``, or the axes of a new figure of ``figsize`` when ``ax`` is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def finish(ax: Axes, show: bool | None) -> Axes:
    """Call ``plt.show()`` when ``show`` is true; return ``ax``."""
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return ax
