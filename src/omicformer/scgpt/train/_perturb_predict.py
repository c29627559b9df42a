"""In-silico perturbation with a fine-tuned scGPT perturbation module (official ``pred_perturb``).

Control cells are read with the perturbed genes flagged, as in training
(:mod:`omicformer.scgpt.train._perturb`), in windows of at most ``max_len`` genes, and the
module's predictions are averaged over the cells, regression-adjusted for the sample of cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..module import TransformerModel
from ._perturb import NOT_PERTURBED, PERTURBED, CovariancePrior

#: Attention scores (cells x heads x genes^2) computed at once when predicting.
ATTENTION_BUDGET = 200_000_000


@torch.inference_mode()
def mean_perturbed_expression(
    module: TransformerModel,
    gene_ids: Sequence[int],
    controls: torch.Tensor,
    perturbed: Sequence[np.ndarray],
    prior: CovariancePrior | None = None,
    *,
    max_len: int | None = None,
    control_mean: np.ndarray | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
    random_state: int = 0,
) -> np.ndarray:
    """Predicted expression after each perturbation, averaged over control cells (in silico).

    Every control cell is the input (continuous values) with the perturbed genes flagged
    :data:`PERTURBED`, as in training; the module's output is averaged over the cells
    (regression-adjusted with ``control_mean``).

    Parameters
    ----------
    module
        Perturbation module (``perturbation=True``); moved to ``device`` and back to the CPU.
    gene_ids
        Vocabulary ids of the model's genes (the columns of ``controls``).
    controls
        Control cells x genes, float32, the values the module reads.
    perturbed
        For each perturbation, the columns of its perturbed genes.
    prior
        The :class:`CovariancePrior` when the module reads one.
    max_len
        Genes per pass. ``None`` or at least the number of genes: all genes in one pass (the
        official ``pred_perturb``). Fewer: the other genes are dealt at random (seeded by
        ``random_state``) into the fewest windows of at most ``max_len`` genes with the
        perturbed ones, as training reads random subsets that hold them; every window is one
        pass, each gene's prediction comes from its window and the perturbed genes' from the
        mean over the windows. Attention's cost grows with the square of the length, so
        windows of 1,536 of 5,000 genes cost about a third of one pass over all of them.
    control_mean
        Mean of all control cells, in the values the module reads (the columns of
        ``controls``), when ``controls`` are a sample of them. Each gene's mean is then
        regression-adjusted for the sample: minus ``b * (mean(x) - control_mean)``, where ``x``
        is the gene's input value in each sampled cell and ``b`` the least-squares slope of the
        gene's prediction on ``x`` over the sampled cells (``0`` where ``x`` does not vary). A
        module that passes part of each cell through (briefly trained) then predicts about
        what it would from every control cell; one whose predictions do not follow the cell
        (``b`` near 0) is left as it is. ``None``: the plain mean.
    batch_size
        Cells per forward pass; fewer when ``ATTENTION_BUDGET`` attention scores would be
        exceeded (every gene of a pass is a token).
    device
        Where to run.
    progress
        Show a progress bar over the perturbations.
    random_state
        Seed of the windows' draw (one draw for all perturbations).

    Returns
    -------
    ``(len(perturbed), n_genes)`` float64 means.
    """
    from ..._core._progress import progress as progress_bar

    module = module.to(device).eval()
    n_genes = len(gene_ids)
    ids = torch.as_tensor(np.asarray(gene_ids), device=device)
    order = np.random.default_rng(random_state).permutation(n_genes)
    out = np.zeros((len(perturbed), n_genes), dtype=np.float64)
    every = None  # the mean of every control cell, for the adjustment
    if control_mean is not None:
        every = torch.as_tensor(np.asarray(control_mean, dtype=np.float64), device=device)
    try:
        for k, cols in enumerate(
            progress_bar(perturbed, disable=not progress, desc="perturbations")
        ):
            cols = np.asarray(cols, dtype=np.int64)
            flags = torch.full((n_genes,), NOT_PERTURBED, dtype=torch.long, device=device)
            flags[torch.as_tensor(cols, device=device)] = PERTURBED
            prior_k = None if prior is None else torch.as_tensor(prior(cols), device=device)
            # per gene: sums of the prediction p, the input x, p * x and x * x over the cells
            sums = torch.zeros(4, n_genes, dtype=torch.float64, device=device)
            count = torch.zeros(n_genes, dtype=torch.float64, device=device)
            for window in prediction_windows(order, cols, max_len):
                w = torch.as_tensor(window, device=device)
                step = max(
                    1, min(batch_size, ATTENTION_BUDGET // (module.config.nhead * len(window) ** 2))
                )
                for start in range(0, controls.shape[0], step):
                    x = controls[start : start + step][:, window].to(device)
                    n = x.shape[0]
                    pred = module(
                        ids[w].expand(n, -1), x, None, pert_flags=flags[w].expand(n, -1),
                        pert_prior=None if prior_k is None else prior_k[w].expand(n, -1),
                    )["mlm_output"].double()  # fmt: skip
                    x = x.double()
                    sums[:, w] += torch.stack([pred, x, pred * x, x * x]).sum(1)
                count[w] += controls.shape[0]
            mean_p, mean_x, mean_px, mean_xx = sums / count
            out[k] = mean_p.cpu().numpy()
            if every is not None:
                var = mean_xx - mean_x**2
                slope = torch.where(var > 1e-12, (mean_px - mean_p * mean_x) / var.clamp_min(1e-12),
                                    torch.zeros_like(var))  # fmt: skip
                out[k] -= (slope * (mean_x - every)).cpu().numpy()
    finally:
        module.cpu()
    return out


def prediction_windows(
    order: np.ndarray, perturbed: np.ndarray, max_len: int | None
) -> list[np.ndarray]:
    """Sorted gene columns of each pass of :func:`mean_perturbed_expression`.

    ``order`` is a permutation of all gene columns; the genes not in ``perturbed`` are cut, in
    that order, into the fewest near-equal windows of at most ``max_len - len(perturbed)``,
    and every window also holds the perturbed genes. One window of all genes when they fit in
    ``max_len`` (or ``max_len`` is ``None``, or leaves no room beside the perturbed genes).
    """
    n_genes, perturbed = len(order), np.asarray(perturbed, dtype=np.int64)
    if max_len is None or n_genes <= max_len or max_len - len(perturbed) < 1:
        return [np.arange(n_genes)]
    room = int(max_len) - len(perturbed)
    rest = order[~np.isin(order, perturbed)]
    parts = np.array_split(rest, math.ceil(len(rest) / room))
    return [np.sort(np.concatenate([perturbed, part])) for part in parts]
