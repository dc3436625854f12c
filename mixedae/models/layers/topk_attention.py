"""Top-K attention (temporary reference-only version; the fused kernel replaces this file)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def topk_keep(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest logits along the last dim (ties at the k-th kept)."""
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits >= kth


def topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int,
                   labels: Optional[torch.Tensor] = None, dropout_p: float = 0.,
                   impl: str = 'auto') -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    logits = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-2, -1)
    keep = topk_keep(logits, topk)
    precision = None
    if labels is not None:
        with torch.no_grad():
            same = (labels.unsqueeze(-1) == labels.unsqueeze(-2)).unsqueeze(1)
            precision = (keep & same).sum() / keep.sum()
    attn = logits.masked_fill(~keep, float('-inf')).softmax(dim=-1)
    if dropout_p:
        attn = torch.nn.functional.dropout(attn, p=dropout_p)
    return (attn @ v.float()).to(q.dtype), precision
