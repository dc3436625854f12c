# Runtime shared by every pretraining config.
default_scope = 'mixedae'
custom_imports = dict(imports=['mixedae'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
log_processor = dict(window_size=10, by_epoch=True)
log_level = 'INFO'
randomness = dict(seed=0, diff_rank_seed=True)
custom_hooks = [
    dict(type='mixedae.MixingBatchCheckHook'),  # G divides the batch, before training
    dict(type='mixedae.NonFiniteGuardHook'),
    dict(type='mixedae.RNGStateHook'),  # RNG states in every checkpoint: bit-exact resume
    dict(type='mixedae.HrAccScheduleHook'),  # hr_acc only on the iterations the logs use
]
load_from = None
resume = False
