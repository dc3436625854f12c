# The BEiT/MAE ADE20K schedule: AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.65,
# 1500 linear warm-up iterations then poly decay, 160k iterations, evaluation every 16k.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mixedae.LayerDecayOptimWrapperConstructor',
    # as mmseg's LayerDecayOptimizerConstructor behind the 48.13 reference: no weight decay
    # for 1-D parameters only (it compares 'pos_embed'/'cls_token' with prefixed names, so
    # they, and the relative position tables, are decayed); tests/parity/test_ade20k_parity.py
    paramwise_cfg=dict(layer_decay_rate=0.65, no_decay_keys=()))
param_scheduler = [  # the poly phase ends at train_cfg.max_iters (set by the Runner)
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=2,
                    save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
auto_scale_lr = dict(base_batch_size=16, enable=False)
