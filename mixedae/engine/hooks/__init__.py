from .hr_acc_schedule_hook import HrAccScheduleHook
from .mixing_batch_check_hook import MixingBatchCheckHook
from .non_finite_guard import NonFiniteError, NonFiniteGuardHook
from .rng_state_hook import RNGStateHook
from .strict_load import StrictLoadHook

__all__ = ['HrAccScheduleHook', 'MixingBatchCheckHook', 'NonFiniteError', 'NonFiniteGuardHook', 'RNGStateHook',
           'StrictLoadHook']
