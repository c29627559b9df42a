"""Length of a default :meth:`~omicformer.scgpt.model.ScGPTPerturbation.train` run.

``max_epochs=max_steps=None``: about ``DEFAULT_CELL_PASSES`` cell passes, fewer on a CPU for
long passes (:func:`default_schedule`).
"""

from __future__ import annotations

import math

import numpy as np

#: Cell passes of a default-length run (``max_epochs=None``): epochs = this / n_cells, clipped.
DEFAULT_CELL_PASSES = 60_000
DEFAULT_EPOCH_RANGE = (1, 15)
#: Genes per pass up to which a default run makes ``DEFAULT_CELL_PASSES``; longer passes cost
#: about the square of their length (attention), so the default makes fewer of them.
BUDGET_LEN = 256


def default_epochs(n_cells: int, cell_passes: int = DEFAULT_CELL_PASSES) -> int:
    """Epochs when ``max_epochs=None``: about ``cell_passes`` cell passes, 1 to 15 epochs."""
    lo, hi = DEFAULT_EPOCH_RANGE
    return int(np.clip(round(cell_passes / max(n_cells, 1)), lo, hi))


def default_cell_passes(n_tokens: int) -> int:
    """Cell passes of a default run whose passes read ``n_tokens`` genes.

    ``DEFAULT_CELL_PASSES`` up to ``BUDGET_LEN`` genes, then shrinking with the square of the
    length, as the cost of a pass grows (attention): 2 CPU cores train 64 cells of 1,536
    genes with the default model in about 14 s, of 200 genes in about 0.3 s.
    """
    scale = min(1.0, (BUDGET_LEN / max(int(n_tokens), 1)) ** 2)
    return max(1, round(DEFAULT_CELL_PASSES * scale))


def default_schedule(
    n_cells: int, n_tokens: int, batch_size: int, *, cpu: bool = True
) -> tuple[int, int | None]:
    """``(max_epochs, max_steps)`` of a default run (``max_epochs=max_steps=None``).

    :func:`default_epochs` of :func:`default_cell_passes` (``cpu=False``:
    ``DEFAULT_CELL_PASSES`` at any length) when those make at least one epoch; else one epoch
    cut after the steps that make them (``max_steps``).
    """
    passes = default_cell_passes(n_tokens) if cpu else DEFAULT_CELL_PASSES
    if passes >= n_cells:
        return default_epochs(n_cells, passes), None
    return 1, max(1, math.ceil(passes / batch_size))


def _trains_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` (``"auto"``: a GPU when present) means the CPU."""
    from ..._core._device import resolve_device

    if accelerator == "auto":
        return resolve_device("auto").type == "cpu"
    return accelerator == "cpu"
