# UperNet + ViT-B/16 on ADE20K, 160k iterations, 8 GPUs x 2 images: the shared recipe.
# The method configs beside this one differ from it only in the backbone checkpoint; this one
# starts from random initialisation.
_base_ = [
    '_base_/models/upernet_vit-b16_ms-adapter.py',
    '_base_/datasets/ade20k.py',
    '_base_/schedules/adamw_ld0.65_160k.py',
    '_base_/default_runtime.py',
]
# bf16 autocast without loss scaling, as the wrapper's default (docs/mixed_precision.md);
# the tiny CPU configs switch back to fp32 with optim_wrapper.type='OptimWrapper'
optim_wrapper = dict(type='mixedae.AmpOptimWrapper')
# the random-init floor starts where the pretrainings start: MAE's initialisation (fixed sin-cos
# values in the learnable position table, xavier-uniform Linears); chosen here. A method config
# that loads a checkpoint replaces these weights.
model = dict(backbone=dict(init_mode='mae'))
