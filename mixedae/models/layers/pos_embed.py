"""Absolute and relative position embeddings: index construction and resizing.

These are the only places where position tables change size, both when a checkpoint made at
one resolution is loaded at another and when an input's token grid differs from the size the
model was built for. Relative position tables follow BEiT's layout, so BEiT/MAE-fine-tune
tables load unchanged; resizing uses torch interpolation (mmseg's path relies on
``scipy.interpolate.interp2d``, which SciPy 1.14 removed).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

Grid = Tuple[int, int]


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Grid, dst_grid: Grid,
                     num_prefix_tokens: int) -> torch.Tensor:
    """Bicubically resample an absolute position embedding.

    pos_embed: 1 x (P + Hs*Ws) x D  ->  1 x (P + Hd*Wd) x D, with P = ``num_prefix_tokens``
    (the class token's entry is kept unchanged). Grids may be non-square.
    """
    expected = num_prefix_tokens + src_grid[0] * src_grid[1]
    if pos_embed.shape[1] != expected:
        raise ValueError(f'pos_embed has {pos_embed.shape[1]} entries, expected {expected} for '
                         f'grid {src_grid} with {num_prefix_tokens} prefix tokens')
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    # plain bicubic (no anti-aliasing), as mmseg's MAE/BEiT and mmdet's ViTDet resize it
    return resample_abs_pos_embed(pos_embed, list(dst_grid), list(src_grid),
                                  num_prefix_tokens=num_prefix_tokens, antialias=False)


def num_relative_entries(grid: Grid, with_cls_token: bool) -> int:
    """Rows of a BEiT relative position table: (2H-1)(2W-1) offsets + 3 class-token entries."""
    return (2 * grid[0] - 1) * (2 * grid[1] - 1) + (3 if with_cls_token else 0)


@lru_cache(maxsize=32)
def relative_position_index(grid: Grid, with_cls_token: bool) -> torch.Tensor:
    """BEiT's index into the relative position table.

    Returns an N x N LongTensor, N = H*W (+1 with a class token first). Patch pairs index the
    offset (dh, dw) as (dh + H - 1) * (2W - 1) + (dw + W - 1); class-to-patch, patch-to-class
    and class-to-class use the last three rows.
    """
    h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]                         # 2 x hw x hw
    index = (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)             # hw x hw
    if not with_cls_token:
        return index
    num_offsets = (2 * h - 1) * (2 * w - 1)
    full = torch.empty(h * w + 1, h * w + 1, dtype=torch.long)
    full[1:, 1:] = index
    full[0, 1:] = num_offsets          # class token attends to patches
    full[1:, 0] = num_offsets + 1      # patches attend to class token
    full[0, 0] = num_offsets + 2
    return full


def resize_rel_pos_table(table: torch.Tensor, src_grid: Grid, dst_grid: Grid,
                         with_cls_token: bool) -> torch.Tensor:
    """Resample a relative position table made for ``src_grid`` to ``dst_grid``.

    table: num_relative_entries(src) x heads -> num_relative_entries(dst) x heads. The offset
    grid is interpolated bicubically with the corners (largest offsets) and the centre (zero
    offset) kept in place; the three class-token rows are copied.
    """
    if table.shape[0] != num_relative_entries(src_grid, with_cls_token):
        raise ValueError(f'relative position table has {table.shape[0]} rows, expected '
                         f'{num_relative_entries(src_grid, with_cls_token)} for grid {src_grid}')
    if tuple(src_grid) == tuple(dst_grid):
        return table
    num_src = (2 * src_grid[0] - 1) * (2 * src_grid[1] - 1)
    offsets, extra = table[:num_src], table[num_src:]
    heads = table.shape[1]
    offsets = offsets.T.reshape(1, heads, 2 * src_grid[0] - 1, 2 * src_grid[1] - 1)
    offsets = F.interpolate(offsets.float(), size=(2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1),
                            mode='bicubic', align_corners=True).to(table.dtype)
    return torch.cat([offsets.reshape(heads, -1).T, extra], dim=0)


def sincos_2d_pos_embed(dim: int, grid: Grid, num_prefix_tokens: int = 0) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine embedding: 1 x (P + H*W) x dim (prefix entries zero).

    As MAE's ``get_2d_sincos_pos_embed`` (``meshgrid(grid_w, grid_h)``): the first half of the
    channels encodes the column, the second half the row, each as sin/cos of the coordinate
    at frequencies 1/10000^(k/(dim/4)). Patches are in row-major order.
    """
    if dim % 4:
        raise ValueError(f'sin-cos position embedding needs dim % 4 == 0, got {dim}')
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing='ij')

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord.reshape(-1, 1) * omega.view(1, -1)              # HW x dim/4
        return torch.cat([angles.sin(), angles.cos()], dim=1)          # HW x dim/2

    emb = torch.cat([encode(cols), encode(rows)], dim=1).float()       # HW x dim
    emb = torch.cat([torch.zeros(num_prefix_tokens, dim), emb], dim=0)
    return emb.unsqueeze(0)
