# Protocol A, 3x: 36 epochs, steps at 27 and 33.
_base_ = './mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py'
train_cfg = dict(max_epochs=36)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
