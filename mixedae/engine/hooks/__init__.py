from .mixing_batch_check_hook import MixingBatchCheckHook

__all__ = ['MixingBatchCheckHook']
