# Ablation of MixedAE (ViT-B/16, 300 epochs): mixing ratio r = 1/3 (G = 3).
# 224px gives 196 patches, not divisible by 3, so this ablation pretrains at 240px
# (15 x 15 = 225 patches) with 510 images per GPU (divisible by 3); the rest is unchanged.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(group_size=3, img_size=240))
train_dataloader = dict(
    batch_size=510,
    dataset=dict(pipeline=[
        dict(type='LoadRGBImage'),
        dict(type='RandomResizedCrop', size=240, scale=(0.2, 1.0), interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackImageInputs'),
    ]))
