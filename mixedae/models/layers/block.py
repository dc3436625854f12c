"""The pre-norm transformer block of the ViT backbones (timm's names), attention as a plug-in."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale, Mlp

from .attention import Attention
from .pos_embed import Grid
from .window import window_partition, window_unpartition

#: LayerNorm as in timm's ViT and MAE (eps 1e-6).
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class Block(nn.Module):
    """Pre-norm transformer block with optional window attention and layer scale.

    The attention contract: ``attn_layer(dim, num_heads, qkv_bias, attn_drop, proj_drop)``
    builds the attention (as timm's ``Block`` takes it; options of a particular attention, such
    as relative positions or homologous key selection, are bound into ``attn_layer`` by the
    backbone that picks it, e.g. with ``functools.partial``), and the built module is called as
    ``attn(x, grid, **attn_kwargs)`` with the keyword arguments of :meth:`forward` beyond
    ``grid``. A windowed block gives it one window's tokens and grid.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 init_values: Optional[float] = None, window_size: int = 0,
                 norm_layer: Callable[[int], nn.Module] = LayerNorm,
                 attn_layer: Callable[..., nn.Module] = Attention) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads, qkv_bias, attn_drop, drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def _attention(self, x: torch.Tensor, grid: Optional[Grid], **attn_kwargs) -> torch.Tensor:
        if not self.window_size:
            return self.attn(x, grid, **attn_kwargs)
        b, _, c = x.shape                                              # no class token here
        windows, padded = window_partition(x.view(b, *grid, c), self.window_size)
        windows = self.attn(windows, (self.window_size, self.window_size), **attn_kwargs)
        return window_unpartition(windows, self.window_size, padded, grid).view(b, -1, c)

    def forward(self, x: torch.Tensor, grid: Optional[Grid] = None, **attn_kwargs
                ) -> torch.Tensor:
        """x: B x N x C; ``grid`` (h, w) of the patch tokens (window and relative attention)."""
        x = x + self.drop_path1(self.ls1(self._attention(self.norm1(x), grid, **attn_kwargs)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
