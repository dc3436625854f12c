# MAE baseline at 1600 epochs, the schedule of the equal-budget ViT-B matrix (chosen here).
_base_ = './mae_vit-base-p16_8xb512-coslr-300e_in1k.py'
train_cfg = dict(max_epochs=1600)
