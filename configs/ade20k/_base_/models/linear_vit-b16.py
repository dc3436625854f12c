# Linear probe of a frozen ViT-B/16 (DINOv2's "linear" segmentation protocol, Oquab et al. 2023,
# sec. 7.4): the patch tokens of the last block after the final norm, batch norm and a linear
# (1x1) classifier; the 32x32 logit map of a 512x512 crop is upsampled bilinearly to the label
# size. The UperNet model's data preprocessor, ViT-B/16 and sliding-window test, with the
# backbone as pretrained (no relative position bias, no layer scale, no drop path: chosen here,
# so that nothing in it is new), frozen, and the probe in place of the neck and heads.
# Two differences from DINOv2's linear configs (docs/protocols.md): the UperNet pipeline's
# (2048, 512) resize cap where DINOv2 keeps the aspect with the short side 512, and bf16
# autocast (set in linear_vit-b16-scratch_...) where DINOv2 trains in fp32.
# CPU runs: set norm_cfg to BN (see the tiny config) since SyncBN needs a GPU process group.
_base_ = './upernet_vit-b16_ms-adapter.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        drop_path_rate=0.0,
        out_indices=(11,),
        final_norm=True,
        use_rel_pos_bias=False,
        init_values=None,
        frozen=True),  # the method configs add init_cfg=dict(type='Pretrained', ...)
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='mixedae.LinearProbeHead',
        in_channels=768,
        channels=768,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
