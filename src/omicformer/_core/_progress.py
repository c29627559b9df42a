"""Progress bars (tqdm; the notebook widget when ipywidgets is installed)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any, TypeVar

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


def labelled_training_bar(label: str) -> Any:
    """Lightning's default training bar (Rich if installed, else tqdm), its epoch led by ``label``.

    Both bars draw ``"Epoch i/n"`` themselves; the label goes in front (``"classifier 1/2 ·
    Epoch 3/9"``), so that the bars of trainings run one after another tell which is which.
    """
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    class LabelledRichBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return f"{label} · {super()._get_train_description(current_epoch)}"

    class LabelledTQDMBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(f"{label} · Epoch {trainer.current_epoch}")

    return LabelledRichBar() if _RICH_AVAILABLE else LabelledTQDMBar()
