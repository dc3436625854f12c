# Ablation of MixedAE (ViT-B/16, 300 epochs): no segment embeddings.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(use_segment_embed=False))
