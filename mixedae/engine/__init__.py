from .hooks import NonFiniteError, NonFiniteGuardHook, StrictLoadHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'NonFiniteError', 'NonFiniteGuardHook',
           'StrictLoadHook']
