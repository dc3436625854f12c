# Runtime shared by the ADE20K configs (mmseg scope; mixedae modules by their scoped names).
default_scope = 'mmseg'
custom_imports = dict(imports=['mixedae', 'mixedae.datasets.ade20k', 'mixedae.models.segmentation'],
                      allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
tta_model = dict(type='SegTTAModel')  # tools/test.py --tta, with tta_pipeline
log_processor = dict(by_epoch=False)
log_level = 'INFO'
randomness = dict(seed=0)
load_from = None
resume = False
custom_hooks = [
    dict(type='mixedae.NonFiniteGuardHook'),
    dict(type='mixedae.RNGStateHook'),  # RNG states in checkpoints: exact resume
    # every rank validates with rank 0's BN statistics, those of the saved checkpoint
    dict(type='mixedae.BroadcastBuffersHook'),
]
