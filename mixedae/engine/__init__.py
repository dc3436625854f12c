from .hooks import MixingBatchCheckHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook']
