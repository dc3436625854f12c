"""Homologous attention: which keys each query may attend to in a mixed sequence.

Modes (``ATTN_MODES``):

- ``topk``: MixedAE's homologous attention. Each query keeps its K largest logits q.k/sqrt(d)
  and masks the rest before the softmax. Computed on the explicit B x heads x N x N logits
  (one batched ``topk``, no loops); memory is that of non-fused attention, 4*B*heads*N^2 bytes
  for the fp32 logits plus the boolean keep mask.
- ``vanilla``: plain attention over the whole mixed sequence (the naive-mixing baseline).
- ``oracle``: attention restricted to tokens of the same source image (block-diagonal in the
  source labels), run by the fused kernel with a boolean mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F

ATTN_MODES = ('topk', 'vanilla', 'oracle')


@dataclass
class HomologousContext:
    """What the attention layers of one forward pass need to know about the mixing.

    labels: T x N' source id of every token of each sequence (class tokens included).
    precisions: filled by ``topk`` layers with the fraction of kept keys whose source is the
    query's (the homologous-recognition accuracy), one scalar per layer.
    """
    mode: str
    labels: torch.Tensor
    topk: int
    precisions: List[torch.Tensor] = field(default_factory=list)
    _same: Optional[torch.Tensor] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ATTN_MODES:
            raise ValueError(f'unknown attention mode {self.mode!r}; choose from {ATTN_MODES}')

    def same_source(self) -> torch.Tensor:
        """T x 1 x N' x N' boolean: query and key come from the same source image."""
        if self._same is None:
            self._same = (self.labels.unsqueeze(-1) == self.labels.unsqueeze(-2)).unsqueeze(1)
        return self._same


def topk_keep(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest logits along the last dim (ties at the k-th kept)."""
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits >= kth


def homologous_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         ctx: HomologousContext, dropout_p: float = 0.) -> torch.Tensor:
    """q, k, v: T x heads x N' x hd -> T x heads x N' x hd, keys selected per ``ctx.mode``."""
    if ctx.mode == 'vanilla':
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if ctx.mode == 'oracle':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.same_source(),
                                              dropout_p=dropout_p)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)           # T x heads x N' x N'
    keep = topk_keep(logits, ctx.topk)
    with torch.no_grad():
        ctx.precisions.append((keep & ctx.same_source()).sum() / keep.sum())
    attn = logits.masked_fill(~keep, float('-inf')).softmax(dim=-1)
    if dropout_p:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v
