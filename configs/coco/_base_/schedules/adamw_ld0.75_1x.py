# Protocol A schedule: AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.75 (chosen: the
# protocol names layer decay without a value; 0.75 is iBOT's ViT-B/16 COCO setting, iBOT's
# evaluation/README.md), no weight decay on 1-D parameters, position table, class token and
# relative tables (the constructor's default no_decay_keys; chosen here),
# 500 warm-up iterations, 12 epochs with steps at 8 and 11 (the 3x configs: 36, 27 and 33).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mixedae.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75),
    clip_grad=None)
