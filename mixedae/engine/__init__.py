from .hooks import (MixingBatchCheckHook, NonFiniteError, NonFiniteGuardHook, RNGStateHook,
                    StrictLoadHook)
from .optimizers import AmpOptimWrapper, LayerDecayOptimWrapperConstructor

__all__ = ['AmpOptimWrapper', 'LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook',
           'NonFiniteError', 'NonFiniteGuardHook', 'RNGStateHook', 'StrictLoadHook']
