"""Transformer encoder of scGPT on ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names equal ``torch.nn.TransformerEncoderLayer`` (``self_attn.in_proj_weight``,
``self_attn.out_proj``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), which is what the official
code loads flash-attn checkpoints into (``Wqkv`` renamed to ``in_proj_``).

Attention masks here are boolean with **True = may attend** (SDPA convention), shaped
``(B, 1, Lq, Lk)`` or broadcastable to it; ``None`` means full attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadSelfAttention(nn.Module):
    """Packed-projection multi-head self-attention (SDPA kernel)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        if d_model % nhead:
            msg = f"d_model={d_model} must be divisible by nhead={nhead}."
            raise ValueError(msg)
        self.nhead = nhead
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D), rows [q; k; v]
        q, k, v = qkv.view(B, L, 3, self.nhead, D // self.nhead).permute(
            2, 0, 3, 1, 4
        )  # (B, nh, L, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.out_proj(y)


class TransformerEncoderLayer(nn.Module):
    """Transformer block: self-attention + ReLU feed-forward, post-norm (official default).

    ``norm_scheme="pre"`` reproduces the official flash layer's pre-norm variant as coded there
    (normalise, add attention; normalise, add feed-forward; no final norm).
    """

    def __init__(
        self, d_model: int, nhead: int, d_hid: int, dropout: float = 0.1, norm_scheme: str = "post"
    ):
        super().__init__()
        if norm_scheme not in ("pre", "post"):
            msg = f"norm_scheme must be 'pre' or 'post', got {norm_scheme!r}."
            raise ValueError(msg)
        self.norm_scheme = norm_scheme
        self.self_attn = MultiheadSelfAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, d_hid)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hid, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_scheme == "post":
            x = self.norm1(x + self.dropout1(self.self_attn(x, attn_mask)))
            return self.norm2(x + self._ff(x))
        x = self.norm1(x)
        x = x + self.dropout1(self.self_attn(x, attn_mask))
        x = self.norm2(x)
        return x + self._ff(x)


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` under ``layers.{i}``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        d_hid: int,
        nlayers: int,
        dropout: float = 0.1,
        norm_scheme: str = "post",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, d_hid, dropout, norm_scheme)
            for _ in range(nlayers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


def padding_attn_mask(src_key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a key padding mask (True = pad, PyTorch convention) into an SDPA mask (True = attend).

    Returns ``None`` when nothing is padded, so SDPA can take its fastest kernel.
    """
    if src_key_padding_mask is None or not bool(src_key_padding_mask.any()):
        return None
    return (~src_key_padding_mask)[:, None, None, :]  # (B, 1, 1, L)


def generative_attn_mask(pcpt_valid: torch.Tensor, gen_valid: torch.Tensor) -> torch.Tensor:
    """Attention mask of scGPT generative pretraining over the sequence ``[known | to-generate]``.

    Known tokens (``<cls>`` and genes with observed values) attend only to valid known tokens;
    each to-generate token attends to all valid known tokens and to itself, never to other
    to-generate tokens.

    Parameters
    ----------
    pcpt_valid
        ``(B, Lp)`` boolean, True for real (non-pad) known tokens.
    gen_valid
        ``(B, Lg)`` boolean, True for real (non-pad) tokens to generate.

    Returns
    -------
    ``(B, 1, Lp + Lg, Lp + Lg)`` boolean mask, True = may attend.
    """
    B, Lp = pcpt_valid.shape
    Lg = gen_valid.shape[1]
    L = Lp + Lg
    mask = torch.zeros(B, L, L, dtype=torch.bool, device=pcpt_valid.device)
    mask[:, :, :Lp] = pcpt_valid[:, None, :]  # every query sees the valid known keys
    idx = torch.arange(Lp, L, device=pcpt_valid.device)
    mask[:, idx, idx] = (
        True  # a token to generate also sees itself (pads too: keeps rows non-empty)
    )
    return mask[:, None]
