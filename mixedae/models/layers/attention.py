"""Multi-head self-attention of the transfer ViT, with optional relative positions: BEiT's bias
table or ViTDet's decomposed ``rel_pos_h`` / ``rel_pos_w``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pos_embed import Grid, num_relative_entries, resize_rel_pos_1d, resize_rel_pos_table
from .rel_pos import beit_rel_pos_bias, decomposed_rel_pos_bias

#: ``rel_pos_type`` values: BEiT's query-independent table, ViTDet's / SAM's decomposed positions.
REL_POS_TYPES = ('beit', 'decomposed')


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``proj``).

    With ``rel_pos_grid`` it owns zero-initialised relative positions for that token grid:
    ``rel_pos_type='beit'``: a BEiT table ``relative_position_bias_table`` (offsets x heads);
    ``'decomposed'``: ViTDet's ``rel_pos_h`` / ``rel_pos_w`` ((2H-1) x head_dim, (2W-1) x
    head_dim; no class token), timm's SAM names. Either becomes an additive logit bias, built
    once per call in the compute dtype and given to ``F.scaled_dot_product_attention`` as its
    ``attn_mask`` (with any extra mask), so the fused bias-capable kernels run.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., rel_pos_grid: Optional[Grid] = None,
                 with_cls_token: bool = True, rel_pos_type: str = 'beit') -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed dim {dim} is not divisible by num_heads {num_heads}')
        if rel_pos_type not in REL_POS_TYPES:
            raise ValueError(f'unknown rel_pos_type {rel_pos_type!r}; choose from {REL_POS_TYPES}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_pos_grid = tuple(rel_pos_grid) if rel_pos_grid else None
        self.rel_pos_type = rel_pos_type
        self.with_cls_token = with_cls_token
        if not self.rel_pos_grid:
            return
        if rel_pos_type == 'beit':
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(num_relative_entries(self.rel_pos_grid, with_cls_token), num_heads))
        else:
            if with_cls_token:
                raise ValueError("rel_pos_type='decomposed' (ViTDet) needs with_cls_token=False")
            h, w = self.rel_pos_grid
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, self.head_dim))

    def qkv_heads(self, x: torch.Tensor):
        """x: B x N x C -> q, k, v, each B x heads x N x head_dim."""
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B x heads x N x head_dim -> projected B x N x C."""
        b, _, n, _ = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))

    def relative_position_bias(self, q: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Logit bias in q's dtype for a token grid (tables resampled only if ``grid`` differs
        from theirs). q: B x heads x N x hd -> heads x N x N (BEiT) or B x heads x N x N
        (decomposed)."""
        grid = tuple(grid)
        if self.rel_pos_type == 'beit':
            table = resize_rel_pos_table(self.relative_position_bias_table, self.rel_pos_grid,
                                         grid, self.with_cls_token)
            return beit_rel_pos_bias(table.to(q.dtype), grid, self.with_cls_token)
        rel_pos_h = resize_rel_pos_1d(self.rel_pos_h, 2 * grid[0] - 1).to(q.dtype)
        rel_pos_w = resize_rel_pos_1d(self.rel_pos_w, 2 * grid[1] - 1).to(q.dtype)
        return decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, grid)

    def forward(self, x: torch.Tensor, grid: Optional[Grid] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: B x N x C; ``grid`` (h, w) of the patch tokens, needed with relative positions;
        ``attn_mask``: additive float or boolean mask broadcastable to B x heads x N x N."""
        q, k, v = self.qkv_heads(x)                                    # each B x heads x N x hd
        if self.rel_pos_grid:
            if grid is None:
                raise ValueError('relative positions need the token grid')
            bias = self.relative_position_bias(q, grid)
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                attn_mask = bias.new_zeros(attn_mask.shape).masked_fill(~attn_mask, float('-inf'))
            attn_mask = bias if attn_mask is None else bias + attn_mask
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_drop if self.training else 0.)
        return self.merge_heads(x)
