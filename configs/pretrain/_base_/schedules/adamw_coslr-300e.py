# MAE's pretraining schedule: AdamW (0.9, 0.95), base lr 1.5e-4 per 256 images, wd 0.05
# (none on 1-D parameters: norms, biases; class and mask tokens are decayed, as MAE's
# add_weight_decay does; MixedAE's segment embeddings and contrastive-head weight, which MAE
# lacks, are decayed by the same rule: chosen here), 40 warm-up epochs then cosine decay.
base_batch_size = 4096
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-4 * base_batch_size / 256, betas=(0.9, 0.95),
                   weight_decay=0.05),
    # layer_decay_rate=1.0: no layer decay, only the shared no-weight-decay rule
    constructor='mixedae.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0, no_decay_keys=()))
warmup_epochs = 40
# the cosine phase has no `end`: the Runner sets it to train_cfg.max_epochs, so changing the
# number of epochs (a child config, --cfg-options train_cfg.max_epochs=N) rescales it; the
# warm-up does not rescale: a run of 40 epochs or fewer also sets param_scheduler.0.end and
# param_scheduler.1.begin (tools/train.py names the values)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=300)
# --auto-scale-lr rescales lr by (GPUs x batch per GPU) / base_batch_size
auto_scale_lr = dict(base_batch_size=base_batch_size, enable=False)
