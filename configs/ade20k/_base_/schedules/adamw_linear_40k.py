# Linear-probe schedule (chosen here, with the values of the ADE20K linear configs released
# with DINOv2, github.com/facebookresearch/dinov2): the BEiT/MAE schedule's warm-up, poly decay
# and hooks, with AdamW lr 1e-3, wd 1e-4 and no layer-wise decay (only the head trains), 40k
# iterations, evaluation every 4k.
_base_ = './adamw_ld0.65_160k.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
train_cfg = dict(max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
