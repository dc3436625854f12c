# mmdet's runtime, plus the mixedae modules (and mmseg's Feature2Pyramid adapter).
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mixedae', 'mixedae.datasets.coco', 'mmseg.models'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='mixedae.NonFiniteGuardHook')]
