"""Lightning's log lines during omicformer's training: banners with a progress bar only, no tips."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: Lightning INFO lines that say nothing about the user's run: advertisements for other
#: packages, and what our own ``estimated_stepping_batches`` (learning-rate schedules) prompts.
_NOT_RUN_FACTS = ("💡 Tip", "Loading `train_dataloader` to estimate number of stepping batches")


class _NoTips(logging.Filter):
    """Drop Lightning's records of :data:`_NOT_RUN_FACTS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_NOT_RUN_FACTS)


#: Where Lightning's ``rank_zero_info`` logs (a filter must sit on the record's own logger).
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


@contextlib.contextmanager
def quiet_lightning(verbose: bool) -> Iterator[None]:
    """Silence Lightning's INFO banners (devices) unless ``verbose``; its tips always."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    tips = _NoTips()
    rank_zero = [logging.getLogger(n) for n in _RANK_ZERO_LOGGERS]
    for lg in rank_zero:
        lg.addFilter(tips)
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for lg in rank_zero:
            lg.removeFilter(tips)
