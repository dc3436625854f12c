from .broadcast_buffers_hook import BroadcastBuffersHook
from .checkpoint_hook import AtomicCheckpointHook
from .hr_acc_schedule_hook import HrAccScheduleHook
from .mixing_batch_check_hook import MixingBatchCheckHook
from .non_finite_guard import NonFiniteError, NonFiniteGuardHook
from .preemption_hook import EXIT_PREEMPTED, Preempted, PreemptionHook
from .rng_state_hook import RNGStateHook
from .strict_load import StrictLoadHook

__all__ = ['AtomicCheckpointHook', 'BroadcastBuffersHook', 'EXIT_PREEMPTED', 'HrAccScheduleHook',
           'MixingBatchCheckHook', 'NonFiniteError', 'NonFiniteGuardHook', 'Preempted',
           'PreemptionHook', 'RNGStateHook', 'StrictLoadHook']
