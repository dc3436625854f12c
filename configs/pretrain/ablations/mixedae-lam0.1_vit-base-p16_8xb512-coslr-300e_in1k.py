# Ablation of MixedAE (ViT-B/16, 300 epochs): homologous contrastive weight lambda = 0.1, the default, named for the sweep table.
_base_ = '../mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'

