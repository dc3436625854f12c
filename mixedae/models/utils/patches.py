"""Images <-> patch vectors, in MAE's layout (row-major patches; each vector p x p x C)."""
from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B x C x H x W -> B x N x (p*p*C), N = (H/p)(W/p)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f'image size {h}x{w} is not divisible by patch size {p}')
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple, channels: int = 3
               ) -> torch.Tensor:
    """B x N x (p*p*C) -> B x C x H x W for a (H/p, W/p) ``grid``."""
    b = patches.shape[0]
    p = patch_size
    gh, gw = grid
    x = patches.reshape(b, gh, gw, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * p, gw * p)
