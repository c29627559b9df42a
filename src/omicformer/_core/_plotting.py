"""Matplotlib plumbing shared by the ``pl`` namespaces: axes, and ``show``/``save`` as scanpy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_Plot = TypeVar("_Plot", "Axes", "Figure")


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (5, 3.5)) -> Axes:
    """``ax``, or the axes of a new figure of ``figsize`` when ``ax`` is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def save_path(name: str, save: bool | str | os.PathLike[str]) -> Path:
    """Where scanpy would write figure ``name`` for ``save=``.

    ``True``: ``figdir/{name}{plot_suffix}.{file_format_figs}`` (of ``sc.settings``); a
    string is appended to ``name`` (``save="_pbmc.pdf"`` -> ``figdir/{name}_pbmc.pdf``, the
    format from its extension, else the default format; ``plot_suffix`` goes before the
    extension, as scanpy puts it); a path with a folder is used as given.
    """
    import scanpy as sc

    fmt, plot_suffix = sc.settings.file_format_figs, sc.settings.plot_suffix
    if save is True:
        return Path(sc.settings.figdir) / f"{name}{plot_suffix}.{fmt}"
    save = os.fspath(save)
    if os.path.dirname(save):
        return Path(save)
    for ext in ("png", "pdf", "svg", "jpg", "jpeg"):  # ".png" alone too, as scanpy reads it
        if save.endswith(f".{ext}"):
            save, fmt = save[: -len(ext) - 1], ext
            break
    return Path(sc.settings.figdir) / f"{name}{save}{plot_suffix}.{fmt}"


def check_save(save: bool | str | os.PathLike[str] | None, name: str) -> None:
    """``ValueError`` when matplotlib cannot write the file ``save`` names (its suffix).

    Call it before the work a plot needs (UMAPs): matplotlib refused an unknown suffix
    (``".xyz"``) only when the figure was written, after the folder was made.
    """
    import scanpy as sc
    from matplotlib.backend_bases import FigureCanvasBase

    save = sc.settings.autosave if save is None else save
    if not save:
        return
    path = save_path(name, save)
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix and suffix not in kinds:  # none: matplotlib's default format
        msg = (
            f"save={save!r} writes {str(path)!r}, a kind of file matplotlib cannot write "
            f"({path.suffix}); end it with one of "
            f"{sorted('.' + k for k in kinds)}."
        )
        raise ValueError(msg)


def finish(
    ax: _Plot, show: bool | None, save: bool | str | os.PathLike[str] | None = None, *, name: str
) -> _Plot | None:
    """Save and/or show the figure of ``ax`` the way scanpy's plotting functions do.

    ``ax`` is an axes or a whole figure. ``show=None`` follows ``sc.settings.autoshow``; ``save``
    (``True``, a suffix or a path, see :func:`save_path`) writes the figure, and ``save=None``
    follows ``sc.settings.autosave`` (``True``: written as for ``save=True``); a saved figure
    is then closed, as scanpy closes it. Returns ``ax`` unless the figure was shown (scanpy
    returns ``None`` then).
    """
    import matplotlib.pyplot as plt
    import scanpy as sc
    from matplotlib.figure import Figure

    show = sc.settings.autoshow if show is None else show
    save = sc.settings.autosave if save is None else save
    if save:
        fig = ax if isinstance(ax, Figure) else ax.figure
        try:
            path = save_path(name, save)
            check_save(save, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, bbox_inches="tight")
        except Exception:  # a bad name or a folder not writable: no figure left open
            plt.close(fig)
            raise
    if show:
        plt.show()
    if save:  # as scanpy: a saved figure is closed (after it was shown)
        plt.close(ax if isinstance(ax, Figure) else ax.figure)
    return None if show else ax
