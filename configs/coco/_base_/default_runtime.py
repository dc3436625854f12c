# mmdet's runtime, plus the mixedae modules (with its mmdet subclasses) and mmseg's
# Feature2Pyramid adapter.
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mixedae', 'mixedae.datasets.coco', 'mixedae.models.detection',
                               'mmseg.models'], allow_failed_imports=False)
custom_hooks = [
    dict(type='mixedae.NonFiniteGuardHook'),
    dict(type='mixedae.RNGStateHook'),  # RNG states in checkpoints: exact resume
    # every rank validates with rank 0's BN statistics, those of the saved checkpoint
    dict(type='mixedae.BroadcastBuffersHook'),
]
# the last two epochs' checkpoints (about 1.3 GB each at ViT-B), not all 12 or 36: enough to
# resume and to evaluate the final one
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))
