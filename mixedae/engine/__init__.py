from .hooks import MixingBatchCheckHook, NonFiniteError, NonFiniteGuardHook, StrictLoadHook
from .optimizers import AmpOptimWrapper, LayerDecayOptimWrapperConstructor

__all__ = ['AmpOptimWrapper', 'LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook',
           'NonFiniteError', 'NonFiniteGuardHook', 'StrictLoadHook']
