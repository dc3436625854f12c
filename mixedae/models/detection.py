"""mmdet's RPN head and RoI extractor with their mmcv kernels run in fp32 under autocast.

mmcv 2.1's compiled ``nms`` and ``roi_align`` dispatch float, double and half only, so under
bf16 autocast the RPN's proposal NMS and the RoI pooling fail. These subclasses cast the boxes,
scores and pooled feature maps to fp32 at those two calls (a no-op in fp32 runs). The pooled
maps are also made contiguous: mmcv's compiled CPU RoIAlign reads a channels-last map (as
ViTDet's pyramid gives) as if it were contiguous and pools wrong values, where torchvision's
kernel (``mixedae.utils.mmcv_ops``) copies it first; ``tests/parity`` compares the two on ViTDet.
Subclasses rather than a patch of mmcv keep the change visible in the configs that use them.

mmdet is imported here, not by ``import mixedae``: the COCO configs list this module in
``custom_imports``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmengine.structures import InstanceData

from mixedae.registry import MODELS


@MODELS.register_module()
class AmpRPNHead(RPNHead):
    """``RPNHead`` whose proposal NMS sees fp32 boxes and scores."""

    def _bbox_post_process(self, results: InstanceData, cfg, rescale: bool = False,
                           with_nms: bool = True, img_meta: Optional[dict] = None
                           ) -> InstanceData:
        results.bboxes = results.bboxes.float()
        results.scores = results.scores.float()
        return super()._bbox_post_process(results, cfg, rescale=rescale, with_nms=with_nms,
                                          img_meta=img_meta)


@MODELS.register_module()
class AmpSingleRoIExtractor(SingleRoIExtractor):
    """``SingleRoIExtractor`` that pools contiguous fp32 feature maps (RoI features come out
    fp32)."""

    def forward(self, feats: Tuple[torch.Tensor], rois: torch.Tensor,
                roi_scale_factor: Optional[float] = None) -> torch.Tensor:
        return super().forward(tuple(f.float().contiguous() for f in feats), rois.float(),
                               roi_scale_factor)
