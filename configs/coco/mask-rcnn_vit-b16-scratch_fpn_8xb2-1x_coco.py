# Protocol A, 1x: Mask R-CNN + ViT-B/16 + adapter + FPN, 8 GPUs x 2 images, 12 epochs.
# The method configs beside this one differ from it only in the backbone checkpoint.
_base_ = [
    '_base_/models/mask-rcnn_vit-b16_ms-adapter_fpn.py',
    '_base_/datasets/coco_instance_ms.py',
    '_base_/schedules/adamw_ld0.75_1x.py',
    '_base_/default_runtime.py',
]
# bf16 autocast without loss scaling, as the wrapper's default (docs/mixed_precision.md);
# the tiny CPU configs switch back to fp32 with optim_wrapper.type='OptimWrapper'
optim_wrapper = dict(type='mixedae.AmpOptimWrapper')
# the random-init floor starts where the pretrainings start: MAE's initialisation (fixed sin-cos
# values in the learnable position table, xavier-uniform Linears); chosen here. A method config
# that loads a checkpoint replaces these weights.
model = dict(backbone=dict(init_mode='mae'))
