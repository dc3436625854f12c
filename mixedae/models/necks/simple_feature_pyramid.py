"""ViTDet's simple feature pyramid."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d

from mixedae.registry import MODELS


#: ViTDet's channel LayerNorm ``LN2d`` is timm's ``LayerNorm2d`` (eps 1e-6, same parameter names).
MODELS.register_module(name='LN2d', module=LayerNorm2d)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Multi-scale maps from the last ViT map: x4 and x2 by transposed convolutions, x1,
    x0.5 / x0.25 by max pooling, each followed by a 1x1 and a 3x3 conv with norm; plus an extra
    max-pooled level on top (P6), as in ViTDet. With 16x16 patches the default scales give
    strides 4-32 (and 64); patch 8 needs (2, 1, 0.5, 0.25) for the same strides.

    in: (B x C x H x W,) -> out: len(scales) + 1 maps of ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 norm_cfg: dict = dict(type='mixedae.LN2d'), init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_outs not in (len(scales), len(scales) + 1):
            raise ValueError(f'num_outs must be {len(scales)} or {len(scales) + 1}')
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        for scale in scales:
            layers: List[nn.Module] = []
            dim = in_channels
            if scale == 4.0:
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                           build_norm_layer(norm_cfg, dim // 2)[1], nn.GELU(),
                           nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                dim //= 4
            elif scale == 2.0:
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                dim //= 2
            elif scale in (0.5, 0.25):
                layers.append(nn.MaxPool2d(int(1 / scale), stride=int(1 / scale)))
            elif scale != 1.0:
                raise ValueError(f'unsupported scale {scale}; use 4, 2, 1, 0.5 or 0.25')
            layers += [ConvModule(dim, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                       ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                  act_cfg=None)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.num_outs > len(outs):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
