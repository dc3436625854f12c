# Tiny CPU linear probe (tests and the demo): the tiny ADE20K run of
# upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py (same data, crops, batch 4, BN) with the
# probe of linear_vit-b16-scratch_8xb2-40k_ade20k-512x512.py in place of the neck and UperNet:
# frozen backbone, last block's normalised patch features, BN + 1x1 classifier. 300 iterations
# (chosen here); the demo sets iterations and lr by key.
_base_ = './upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
model = dict(
    backbone=dict(out_indices=(3,), final_norm=True, use_rel_pos_bias=False, init_values=None,
                  frozen=True),
    neck=None,
    decode_head=dict(_delete_=True, type='mixedae.LinearProbeHead', in_channels=64, channels=64,
                     num_classes=5, norm_cfg={{_base_.norm_cfg}}, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0)),
    auxiliary_head=None)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',  # fp32 on CPU
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=100))
