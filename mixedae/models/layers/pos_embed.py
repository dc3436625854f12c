"""Absolute and relative position tables: their sizes and resizing.

These are the only places where position tables change size, both when a checkpoint made at
one resolution is loaded at another and when an input's token grid differs from the size the
model was built for. BEiT relative position tables keep BEiT's layout (timm's
``gen_relative_position_index``), so BEiT/MAE-fine-tune tables load unchanged; they are resized
here, not with timm's ``resize_rel_pos_bias_table`` (BEiT's per-head CPU interpolation for
checkpoints, not differentiable) or mmseg's (square only, needs ``scipy.interpolate.interp2d``,
removed in SciPy 1.14), because the resize also runs inside the forward pass, on the device,
for any (non-square) grid. ViTDet's decomposed tables are resized linearly, as ViTDet and SAM
do (timm's ``get_rel_pos``).
"""
from __future__ import annotations

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


def resize_rel_pos_1d(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a decomposed (ViTDet) relative position table: L x C -> length x C.

    The same interpolation as ViTDet's and timm's ``get_rel_pos`` (``align_corners=False``).
    """
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.T.unsqueeze(0).float(), size=length, mode='linear')
    return resized[0].T.to(rel_pos.dtype)


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
