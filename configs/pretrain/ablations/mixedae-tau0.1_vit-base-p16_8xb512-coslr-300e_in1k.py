# Ablation of MixedAE (ViT-B/16, 300 epochs): contrastive temperature tau = 0.1 (default 0.25).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(contrast_tau=0.1)
