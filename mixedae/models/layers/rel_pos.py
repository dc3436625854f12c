"""Relative positions as additive attention-logit biases: BEiT's tables and ViTDet's decomposed
(query-dependent) positions.

Both are Toeplitz in the token grid (the entry of a query/key pair depends only on their
offset), so the N x N bias is cut from the table with strided views (``unfold``) and one copy,
not gathered with an N x N index: the backward pass is then ``unfold``'s dense fold instead of an
N² scatter-add (sorted on CUDA) into the table, and no index has to be built, cached or moved to
the device. Call these with tables already cast to the compute dtype.
"""
from __future__ import annotations

import torch

from .pos_embed import Grid


def toeplitz_1d(table: torch.Tensor, size: int) -> torch.Tensor:
    """(2S-1) x C table -> S x S x C with out[i, j] = table[S - 1 + i - j] (offset i - j)."""
    if table.shape[0] != 2 * size - 1:
        raise ValueError(f'a relative table for {size} positions needs {2 * size - 1} rows, '
                         f'got {table.shape[0]}')
    # unfold: [a, c, k] = table[a + k]; a = i, k = S - 1 - j  (the flip)
    return table.unfold(0, size, 1).flip(2).transpose(1, 2)


def beit_rel_pos_bias(table: torch.Tensor, grid: Grid, with_cls_token: bool) -> torch.Tensor:
    """BEiT's relative position bias: table (2H-1)(2W-1)[+3] x heads -> heads x N x N.

    Entry (q, k) of the patch block is the table row (dh + H - 1) * (2W - 1) + (dw + W - 1) of
    the offset (dh, dw) = q - k (timm's ``gen_relative_position_index`` layout); with a class
    token first, row ``num_offsets`` is class->patch, ``+1`` patch->class, ``+2`` class->class.
    """
    h, w = grid
    heads = table.shape[1]
    num_offsets = (2 * h - 1) * (2 * w - 1)
    offsets = table[:num_offsets].T.reshape(heads, 2 * h - 1, 2 * w - 1)
    # unfold twice: [i1, j1, k1, k2] = offsets[i1 + k1, j1 + k2]; k = (H-1-i2, W-1-j2) (the flip)
    bias = offsets.unfold(1, h, 1).unfold(2, w, 1).flip(3, 4).reshape(heads, h * w, h * w)
    if not with_cls_token:
        return bias
    cls_to_patch, patch_to_cls, cls_to_cls = table[num_offsets:].T[..., None, None].unbind(1)
    top = torch.cat([cls_to_cls, cls_to_patch.expand(-1, 1, h * w)], dim=2)       # heads x 1 x N
    rest = torch.cat([patch_to_cls.expand(-1, h * w, 1), bias], dim=2)            # heads x hw x N
    return torch.cat([top, rest], dim=1)


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            grid: Grid) -> torch.Tensor:
    """ViTDet / SAM / MViTv2 decomposed relative positions: the bias ``q · R_h + q · R_w``.

    q: B x heads x N x hd (unscaled, N = H*W, no class token); rel_pos_h: (2H-1) x hd,
    rel_pos_w: (2W-1) x hd -> B x heads x N x N.
    """
    h, w = grid
    b, heads, n, d = q.shape
    r_h, r_w = toeplitz_1d(rel_pos_h, h), toeplitz_1d(rel_pos_w, w)     # H x H x hd, W x W x hd
    q = q.reshape(b, heads, h, w, d)
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', q, r_h)                      # B x heads x H x W x H
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', q, r_w)                      # B x heads x H x W x W
    return (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(b, heads, n, n)
