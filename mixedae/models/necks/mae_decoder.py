"""MAE's light-weight pixel decoder (names follow the official MAE release)."""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.models.vision_transformer import Block

from mixedae.registry import MODELS
from ..layers.block import LayerNorm
from ..layers.pos_embed import sincos_2d_pos_embed


@MODELS.register_module()
class MAEDecoder(BaseModule):
    """Embed visible tokens, fill the other positions with a mask token, add fixed sin-cos
    positions, run ``depth`` transformer blocks and predict each patch's p*p*C pixels."""

    def __init__(self, num_patches: int, grid: tuple, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, decoder_embed_dim: int = 512, depth: int = 8,
                 num_heads: int = 16, mlp_ratio: float = 4., init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if grid[0] * grid[1] != num_patches:
            raise ValueError(f'grid {grid} does not hold {num_patches} patches')
        self.num_patches = num_patches
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer('decoder_pos_embed',
                             sincos_2d_pos_embed(decoder_embed_dim, grid, num_prefix_tokens=1),
                             persistent=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(depth)])
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans)
        nn.init.normal_(self.mask_token, std=.02)  # as MAE
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, visible_ids: torch.Tensor) -> torch.Tensor:
        """tokens: R x (1 + K) x D (class token first), visible_ids: R x K positions ->
        predicted patch pixels R x N x (p*p*C)."""
        x = self.decoder_embed(tokens)
        r, _, d = x.shape
        # under autocast x is in the compute dtype and the fp32 token must follow for scatter
        full = self.mask_token.to(x.dtype).expand(r, self.num_patches, d).clone()
        full = full.scatter(1, visible_ids.unsqueeze(-1).expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]
