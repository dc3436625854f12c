# Ablation of MixedAE (ViT-B/16, 300 epochs): homologous contrastive weight lambda = 0 (default 0.1).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(contrast_weight=0)
