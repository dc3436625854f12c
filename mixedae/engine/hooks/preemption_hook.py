"""Preemption-safe training: on SIGTERM or SIGUSR1 the run finishes its iteration, saves a
complete checkpoint and stops with :data:`EXIT_PREEMPTED`; ``--resume`` continues bit-exactly.

Slurm sends SIGTERM when it preempts a job and, with ``--signal=USR1@SECONDS``, SIGUSR1 that
long before the time limit. The signal handler only records the signal; the hook acts on it
after the next training iteration, when the weights, optimizer and RNG states are consistent.
"""
from __future__ import annotations

import signal
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook

from mixedae.registry import HOOKS
from .checkpoint_hook import AtomicCheckpointHook
from .rng_state_hook import RNGStateHook

#: exit status of a preempted run: sysexits' EX_TEMPFAIL ("try again later").
EXIT_PREEMPTED = 75
#: the signals that ask a run to save and stop.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a preemption signal after saving ``checkpoint``."""

    def __init__(self, reason: str, iteration: int, checkpoint: str) -> None:
        self.reason, self.iteration, self.checkpoint = reason, iteration, checkpoint
        super().__init__(f'preempted ({reason}): stopped after iteration {iteration}, saved '
                         f'{checkpoint}; continue with the same command plus --resume '
                         f'(exit status {EXIT_PREEMPTED})')


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Stop the run on SIGTERM / SIGUSR1 at an iteration boundary, with a checkpoint.

    After each training iteration every rank takes the MAX of the "signal received" flags
    (one all-reduce of one number when distributed), so all ranks stop at the same iteration
    even when only some were signalled. It then saves through the run's
    ``mixedae.AtomicCheckpointHook`` (the RNG states of ``mixedae.RNGStateHook`` included) and
    raises :class:`Preempted`, which ``tools/train.py`` turns into exit status
    :data:`EXIT_PREEMPTED`. Runs last among the hooks of an iteration (priority LOWEST).
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._received: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _record(self, signum: int, frame) -> None:
        self._received = signum

    def before_run(self, runner) -> None:
        for kind in (AtomicCheckpointHook, RNGStateHook):
            if not any(isinstance(h, kind) for h in runner.hooks):
                raise ValueError(f'PreemptionHook needs mixedae.{kind.__name__} among the '
                                 'hooks of the run (tools/train.py installs it)')
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)

    def after_run(self, runner) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _stop_requested(self) -> bool:
        """Whether any rank has received a preemption signal."""
        flag = torch.tensor([0 if self._received is None else 1])
        if is_distributed():
            all_reduce(flag, op='max')
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._stop_requested():
            return
        hook = next(h for h in runner.hooks if isinstance(h, AtomicCheckpointHook))
        path = hook.save_now(runner)
        self._restore_handlers()
        reason = (signal.Signals(self._received).name if self._received is not None
                  else 'signal received by another rank')
        raise Preempted(reason, runner.iter + 1, path)
