from .hooks import MixingBatchCheckHook, RNGStateHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook', 'RNGStateHook']
