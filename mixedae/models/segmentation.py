"""``mixedae.LinearProbeHead``: the linear segmentation probe of frozen patch features.

Batch norm and a 1x1 convolution (one linear classifier per patch) on the backbone's patch
feature map; the logits, one per patch, are upsampled bilinearly to the label size by
``BaseDecodeHead``'s loss and prediction. This is the "linear" protocol of DINOv2 (Oquab et
al. 2023, sec. 7.4, semantic segmentation; the configs differ from DINOv2's in the resize cap
and in precision, docs/protocols.md); mmseg ships no head that is only a norm and a
classifier, hence this one (docs/protocols.md, "Linear probe").

mmseg is imported here, not by ``import mixedae``: the ADE20K configs list this module in
``custom_imports``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from mixedae.registry import MODELS


@MODELS.register_module()
class LinearProbeHead(BaseDecodeHead):
    """Norm (``norm_cfg``, e.g. BN or SyncBN) then ``BaseDecodeHead``'s 1x1 ``conv_seg``.

    ``channels`` must equal the (concatenated) input channels: there is no layer between the
    features and the classifier. ``dropout_ratio`` defaults to 0 (a plain linear layer).
    """

    def __init__(self, dropout_ratio: float = 0., **kwargs) -> None:
        super().__init__(dropout_ratio=dropout_ratio, **kwargs)
        if self.norm_cfg is None:
            raise ValueError('LinearProbeHead needs norm_cfg (e.g. dict(type="BN")): the probe '
                             'normalises the features before the linear classifier')
        if self.channels != self.in_channels:
            raise ValueError(f'LinearProbeHead: channels={self.channels} must equal the input '
                             f'channels {self.in_channels} (no layer before the classifier)')
        self.bn = build_norm_layer(self.norm_cfg, self.in_channels)[1]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Feature maps (B x C x h x w at ``in_index``) -> logits B x num_classes x h x w."""
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
