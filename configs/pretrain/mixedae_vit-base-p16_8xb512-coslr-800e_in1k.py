_base_ = './mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
train_cfg = dict(max_epochs=800)
