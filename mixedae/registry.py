"""MMEngine registries of mixedae.

Every registry is a child of MMEngine's root registry with the scope ``mixedae``, so that
(1) configs with ``default_scope='mixedae'`` (pretraining) build both our modules and MMEngine's,
and (2) configs running under ``default_scope='mmseg'`` or ``'mmdet'`` build our modules with
the scoped name, e.g. ``dict(type='mixedae.ViT')`` or
``constructor='mixedae.LayerDecayOptimWrapperConstructor'``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

# modules defined in mixedae
MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mixedae.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=['mixedae.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          locations=['mixedae.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mixedae.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['mixedae.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['mixedae.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS)  # none of our own: mmseg's and mmdet's

# scope children so that default_scope='mixedae' resolves MMEngine's own components (without
# one, MMEngine warns and falls back to its root registry: e.g. the pretraining configs' sampler)
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS,
                         locations=['mixedae.datasets'])  # and one of ours: FamilySampler
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS)
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS)
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS)
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS)
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS)
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR)
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS)
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS)
LOG_PROCESSORS = Registry('log_processor', parent=MMENGINE_LOG_PROCESSORS)
