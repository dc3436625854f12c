# Ablation of MixedAE (ViT-B/16, 300 epochs): full mixing mode: G mixed sequences per
# group (every patch visible once; G x the encoder cost of compose mode).
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(mix_mode='full')
