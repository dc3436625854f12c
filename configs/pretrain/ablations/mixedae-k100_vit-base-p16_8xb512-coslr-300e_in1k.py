# Ablation of MixedAE (ViT-B/16, 300 epochs): TopK with K = 100 (two images' share; default N/G + 1 = 50).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(topk=100))
