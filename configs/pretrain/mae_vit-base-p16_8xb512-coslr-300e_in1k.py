# MAE baseline: no mixing (G = 1), random masking 75%, no contrastive loss; same recipe.
_base_ = './mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(group_size=1), mask_ratio=0.75, contrast_weight=0.0)
