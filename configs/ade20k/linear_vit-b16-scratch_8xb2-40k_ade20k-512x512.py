# Linear probe of a frozen ViT-B/16 on ADE20K, 40k iterations, 8 GPUs x 2 images: the shared
# recipe. The method configs beside this one differ from it only in the backbone checkpoint;
# this one probes the randomly initialised backbone (the floor of the table).
_base_ = [
    '_base_/models/linear_vit-b16.py',
    '_base_/datasets/ade20k.py',
    '_base_/schedules/adamw_linear_40k.py',
    '_base_/default_runtime.py',
]
# bf16 autocast without loss scaling, as the UperNet recipe (docs/mixed_precision.md);
# DINOv2's linear configs train in fp32 (docs/protocols.md)
optim_wrapper = dict(type='mixedae.AmpOptimWrapper')
# the random-init floor starts where the pretrainings start: MAE's initialisation (fixed sin-cos
# values in the learnable position table, xavier-uniform Linears); chosen here. A method config
# that loads a checkpoint replaces these weights.
model = dict(backbone=dict(init_mode='mae'))
