# Ablation of MixedAE (ViT-B/16, 300 epochs): each homologous layer's key projection starts as a
# copy of its query projection (the demo's initialisation; docs/method.md).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(tied_qk_init=True))
