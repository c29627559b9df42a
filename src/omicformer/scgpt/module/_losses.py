"""scGPT training objectives (one home for each loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is True (official ``masked_mse_loss``)."""
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
