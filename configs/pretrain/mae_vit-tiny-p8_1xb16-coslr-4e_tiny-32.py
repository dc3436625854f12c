# MAE on the tiny CPU configuration: no mixing, 75% random masking, same budget.
_base_ = './mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'
model = dict(backbone=dict(group_size=1, tied_qk_init=False),  # MAE's own initialisation
             mask_ratio=0.75, contrast_weight=0.0)
