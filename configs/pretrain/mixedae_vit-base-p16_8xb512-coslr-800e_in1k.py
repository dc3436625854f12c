_base_ = './mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
max_epochs = 800
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=40,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 40, eta_min=0.0, by_epoch=True,
         begin=40, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
