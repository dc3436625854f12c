# Ablation of MixedAE (ViT-B/16, 300 epochs): homologous attention in the last half of the blocks only.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(homologous_layers='last_half'))
