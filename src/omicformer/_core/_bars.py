"""Lightning's training bars with a label before the epoch: which of several trainings runs."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


class LabelledRichBar(RichProgressBar):
    """Lightning's Rich bar, its ``"Epoch i/n"`` led by ``label``."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{self.label} · {super()._get_train_description(current_epoch)}"


class LabelledTQDMBar(TQDMProgressBar):
    """Lightning's tqdm bar, its ``"Epoch i"`` led by ``label``."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.label} · Epoch {trainer.current_epoch}")


def labelled_training_bar(label: str) -> RichProgressBar | TQDMProgressBar:
    """Lightning's default training bar (Rich or tqdm, as Lightning picks), led by ``label``.

    The bars draw ``"Epoch i/n"`` (Rich) or ``"Epoch i"`` (tqdm) themselves; the label goes in
    front (``"classifier 1/2 · Epoch 3/9"``), so that the bars of trainings run one after
    another tell which is which.
    """
    # the bar Lightning itself would add: Rich where its callback connector knows rich to be
    # installed (Lightning 2.6), else tqdm (2.5 always); read when called, as tests change it
    from lightning.pytorch.trainer.connectors import callback_connector

    rich = bool(getattr(callback_connector, "_RICH_AVAILABLE", False))
    return LabelledRichBar(label) if rich else LabelledTQDMBar(label)
