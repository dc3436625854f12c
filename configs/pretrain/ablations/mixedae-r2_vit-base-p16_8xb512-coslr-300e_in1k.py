# Ablation of MixedAE (ViT-B/16, 300 epochs): mixing ratio r = 1/2 (G = 2).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(group_size=2))
