"""scGPT training objectives (one home for each loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is True (official ``masked_mse_loss``).

    Deliberate difference: with no position masked the loss is 0 (in the graph), where the
    official ``sum / mask.sum()`` gives NaN (0 / 0) and would poison the step.
    """
    mask = mask.float()
    denom = mask.sum().clamp(min=1.0)
    return F.mse_loss(pred * mask, target * mask, reduction="sum") / denom


def ecs_loss(cell_emb: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Elastic cell similarity loss (official form).

    ``e = normalize(h_cls)``; ``cos = relu(e e^T)`` with a zeroed diagonal;
    ``loss = mean(1 - (cos - threshold)^2)`` over all ``B x B`` entries.
    Pulls similar cells (cos > threshold) together and pushes dissimilar ones apart.
    """
    e = F.normalize(cell_emb, p=2, dim=1)
    cos = e @ e.t()
    eye = torch.eye(cos.shape[0], dtype=torch.bool, device=cos.device)
    cos = F.relu(cos.masked_fill(eye, 0.0))
    return torch.mean(1 - (cos - threshold) ** 2)


def cce_loss(cell1: torch.Tensor, cell2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Contrastive cell embedding loss (official ``CCE``): SimCSE between two passes of a batch.

    ``cell1`` and ``cell2`` are the cell embeddings of two forward passes of the same cells
    (dropout makes them differ); each cell's second view is its positive, every other cell's
    the negatives: cross-entropy over ``cos(cell1_i, cell2_j) / temperature``. Under
    ``torch.distributed`` in training the official code gathers both views from every process
    first (keeping this process's own tensors, so gradients flow); callers do that.
    """
    sim = F.cosine_similarity(cell1.unsqueeze(1), cell2.unsqueeze(0), dim=-1) / temperature
    return F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device))


def mnn_loss(cell_emb: torch.Tensor, batch_labels: torch.Tensor) -> torch.Tensor:
    """Pull mutual nearest neighbours from different batches together (not in official scGPT).

    The embeddings are centred on the minibatch mean and L2-normalised (``e``). Cell ``i``'s
    cross-batch neighbour ``j(i)`` is the cell of another batch with the highest cosine
    ``e_i . e_j``; ``i`` and ``j(i)`` are a pair when each is the other's neighbour (mutual
    nearest neighbours, as MNN batch correction pairs cells). ``loss = mean(1 - e_i . e_j)``
    over the pairs; ``0`` (in the graph) when the minibatch has none.
    """
    e = F.normalize(cell_emb - cell_emb.mean(0, keepdim=True), p=2, dim=1)
    cos = e @ e.t()
    cross = batch_labels[:, None] != batch_labels[None, :]
    nearest = cos.masked_fill(~cross, -2.0).argmax(dim=1)
    i = torch.arange(len(nearest), device=nearest.device)
    pair = cross[i, nearest] & (nearest[nearest] == i)
    if not pair.any():
        return cell_emb.sum() * 0.0
    return (1 - cos[i[pair], nearest[pair]]).mean()
