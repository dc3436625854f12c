_base_ = [
    '_base_/models/mixedae_vit-base-p16.py',
    '_base_/datasets/imagenet_pretrain.py',
    '_base_/schedules/adamw_coslr-300e.py',
    '_base_/default_runtime.py',
]
# bf16 autocast without loss scaling, the wrapper's default (docs/mixed_precision.md)
optim_wrapper = dict(type='mixedae.AmpOptimWrapper')
