# Protocol A: Mask R-CNN, ViT-B/16 + multi-scale adapter (blocks 3, 5, 7, 11 resampled
# x4, x2, x1, x0.5 by mmseg's Feature2Pyramid) + FPN; mmdet's Mask R-CNN heads.
# Global attention with a zero-initialised relative position bias and absolute positions
# resampled to every input size. CPU runs: set the adapter's norm_cfg to BN.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mixedae.ViT',
        img_size=(1024, 1024),
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        drop_path_rate=0.1,
        out_indices=(3, 5, 7, 11),
        final_norm=False,
        use_rel_pos_bias=True,
        with_cp=True),  # the method configs add init_cfg=dict(type='Pretrained', ...)
    neck=[
        dict(type='mmseg.Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[768, 768, 768, 768], out_channels=256, num_outs=5),
    ],
    # mmdet's heads whose mmcv nms / RoIAlign calls run in fp32 under bf16 autocast
    rpn_head=dict(type='mixedae.AmpRPNHead'),
    roi_head=dict(bbox_roi_extractor=dict(type='mixedae.AmpSingleRoIExtractor'),
                  mask_roi_extractor=dict(type='mixedae.AmpSingleRoIExtractor')))
