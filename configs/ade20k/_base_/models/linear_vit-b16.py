# Linear probe of a frozen ViT-B/16 (DINOv2's "linear" segmentation protocol, Oquab et al. 2023,
# sec. 7.4): the patch tokens of the last block after the final norm, batch norm and a linear
# (1x1) classifier; the 32x32 logit map of a 512x512 crop is upsampled bilinearly to the label
# size. The backbone is the pretrained encoder as pretrained (no relative position bias, no
# layer scale, no drop path: chosen here, so that nothing in it is new) and gets no gradient.
# CPU runs: set norm_cfg to BN (see the tiny config) since SyncBN needs a GPU process group.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    backbone=dict(
        type='mixedae.ViT',
        img_size=(512, 512),
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.0,
        out_indices=(11,),
        final_norm=True,
        use_abs_pos_embed=True,
        use_rel_pos_bias=False,
        init_values=None,
        frozen=True),  # the method configs add init_cfg=dict(type='Pretrained', ...)
    decode_head=dict(
        type='mixedae.LinearProbeHead',
        in_channels=768,
        channels=768,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
