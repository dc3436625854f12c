"""Multi-head self-attention of the transfer ViT, with an optional BEiT relative position bias."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pos_embed import Grid, num_relative_entries, relative_position_index, resize_rel_pos_table


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``proj``).

    With ``rel_pos_grid`` it owns a BEiT relative position table (zero-initialised) for that
    token grid and adds the resulting heads x N x N bias to the logits. Always runs
    ``F.scaled_dot_product_attention``; the bias and any extra mask are its ``attn_mask``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., rel_pos_grid: Optional[Grid] = None,
                 with_cls_token: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_pos_grid = tuple(rel_pos_grid) if rel_pos_grid else None
        self.with_cls_token = with_cls_token
        if self.rel_pos_grid:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(num_relative_entries(self.rel_pos_grid, with_cls_token), num_heads))

    def qkv_heads(self, x: torch.Tensor):
        """x: B x N x C -> q, k, v, each B x heads x N x head_dim."""
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B x heads x N x head_dim -> projected B x N x C."""
        b, _, n, _ = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))

    def relative_position_bias(self, grid: Grid) -> torch.Tensor:
        """heads x N x N bias for a token grid (resampling the table if ``grid`` differs)."""
        table = resize_rel_pos_table(self.relative_position_bias_table, self.rel_pos_grid, grid,
                                     self.with_cls_token)
        index = relative_position_index(tuple(grid), self.with_cls_token).to(table.device)
        n = index.shape[0]
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, grid: Optional[Grid] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: B x N x C; ``grid`` (h, w) of the patch tokens, needed with a relative bias;
        ``attn_mask``: additive float or boolean mask broadcastable to B x heads x N x N."""
        q, k, v = self.qkv_heads(x)                                    # each B x heads x N x hd
        if self.rel_pos_grid:
            if grid is None:
                raise ValueError('relative position bias needs the token grid')
            bias = self.relative_position_bias(grid).to(q.dtype).unsqueeze(0)
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(bias).masked_fill(~attn_mask, float('-inf'))
            attn_mask = bias if attn_mask is None else bias + attn_mask
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_drop if self.training else 0.)
        return self.merge_heads(x)
