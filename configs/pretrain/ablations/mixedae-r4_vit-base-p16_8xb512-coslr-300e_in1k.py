# Ablation of MixedAE (ViT-B/16, 300 epochs): mixing ratio r = 1/4 (G = 4), the default, named for the sweep table.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'

