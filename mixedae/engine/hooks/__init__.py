from .mixing_batch_check_hook import MixingBatchCheckHook
from .rng_state_hook import RNGStateHook

__all__ = ['MixingBatchCheckHook', 'RNGStateHook']
