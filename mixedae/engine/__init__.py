from .hooks import MixingBatchCheckHook, NonFiniteError, NonFiniteGuardHook, StrictLoadHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook', 'NonFiniteError',
           'NonFiniteGuardHook', 'StrictLoadHook']
