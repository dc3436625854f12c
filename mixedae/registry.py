"""MMEngine registries of mixedae.

Each registry is a child of MMEngine's root registry with the scope ``mixedae``, so configs
running under ``default_scope='mmseg'`` or ``'mmdet'`` build our modules with the scoped name,
e.g. ``dict(type='mixedae.ViT')`` or ``constructor='mixedae.LayerDecayOptimWrapperConstructor'``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mixedae.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=['mixedae.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mixedae.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mixedae.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['mixedae.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['mixedae.evaluation'])
