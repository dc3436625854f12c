from .non_finite_guard import NonFiniteError, NonFiniteGuardHook
from .strict_load import StrictLoadHook

__all__ = ['NonFiniteError', 'NonFiniteGuardHook', 'StrictLoadHook']
