# Protocol B (ViTDet): 16 GPUs x 4 images, LSJ 1024, ~100 epochs, layer decay 0.7.
# The method configs beside this one differ from it only in the backbone checkpoint.
_base_ = [
    '_base_/models/mask-rcnn_vitdet-b16_sfp.py',
    '_base_/datasets/coco_instance_lsj-1024.py',
    '_base_/schedules/adamw_ld0.7_100e.py',
    '_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
# bf16 autocast without loss scaling, as the wrapper's default (docs/mixed_precision.md);
# the tiny CPU configs switch back to fp32 with optim_wrapper.type='OptimWrapper'
optim_wrapper = dict(type='mixedae.AmpOptimWrapper')
# the random-init floor starts where the pretrainings start: MAE's initialisation (fixed sin-cos
# values in the learnable position table, xavier-uniform Linears); chosen here. A method config
# that loads a checkpoint replaces these weights.
model = dict(backbone=dict(init_mode='mae'))
