from .hooks import MixingBatchCheckHook
from .optimizers import AmpOptimWrapper, LayerDecayOptimWrapperConstructor

__all__ = ['AmpOptimWrapper', 'LayerDecayOptimWrapperConstructor', 'MixingBatchCheckHook']
