from .hooks import (HrAccScheduleHook, MixingBatchCheckHook, NonFiniteError, NonFiniteGuardHook, RNGStateHook,
                    StrictLoadHook)
from .optimizers import AmpOptimWrapper, LayerDecayOptimWrapperConstructor

__all__ = ['AmpOptimWrapper', 'HrAccScheduleHook', 'LayerDecayOptimWrapperConstructor',
           'MixingBatchCheckHook',
           'NonFiniteError', 'NonFiniteGuardHook', 'RNGStateHook', 'StrictLoadHook']
