# Protocol B: ViTDet. ViT-B/16 with 14x14 window attention and global attention in blocks
# 2, 5, 8, 11, no class token, ViTDet's decomposed relative positions (rel_pos_h / rel_pos_w,
# zero-initialised, in window and global blocks); simple feature pyramid from the last map;
# Mask R-CNN with LayerNorm in the RPN conv, a 4-conv box head and the mask head. Every batch,
# test batches included, is padded to the full 1024 x 1024 (img_shape unchanged), so the test
# grid is the training grid (64 x 64) and no position table is resampled at test time.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
norm_cfg = dict(type='mixedae.LN2d', requires_grad=True)
model = dict(
    data_preprocessor=dict(pad_size_divisor=1024),
    backbone=dict(
        _delete_=True,
        type='mixedae.ViT',
        img_size=(1024, 1024),
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        drop_path_rate=0.1,
        out_indices=(11,),
        final_norm=False,
        with_cls_token=False,
        use_rel_pos_bias=True,
        rel_pos_type='decomposed',
        window_size=14,
        window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10),
        with_cp=True),  # the method configs add init_cfg=dict(type='Pretrained', ...)
    neck=dict(_delete_=True, type='mixedae.SimpleFeaturePyramid', in_channels=768,
              out_channels=256, scales=(4.0, 2.0, 1.0, 0.5), num_outs=5, norm_cfg=norm_cfg),
    # mmdet's heads whose mmcv nms / RoIAlign calls run in fp32 under bf16 autocast
    rpn_head=dict(type='mixedae.AmpRPNHead', num_convs=2),
    roi_head=dict(
        bbox_roi_extractor=dict(type='mixedae.AmpSingleRoIExtractor'),
        mask_roi_extractor=dict(type='mixedae.AmpSingleRoIExtractor'),
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
