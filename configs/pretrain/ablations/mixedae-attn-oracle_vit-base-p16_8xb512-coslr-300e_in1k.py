# Ablation of MixedAE (ViT-B/16, 300 epochs): attention restricted to the true source image.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(attn_mode='oracle'))
