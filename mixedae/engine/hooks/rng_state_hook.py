"""Bit-exact resume: every checkpoint carries the Python, numpy and torch (CPU, CUDA) RNG states
of every rank, and resuming restores them where the uninterrupted run would have had them.

Why a hook and not per-iteration seeding: reseeding each iteration would change the random
streams of every existing recipe (and their published numbers), while saving the state leaves an
uninterrupted run exactly as it was.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from mixedae.registry import HOOKS

RNGState = Dict[str, Any]


def get_rng_state() -> RNGState:
    """This process's Python, numpy, torch CPU and (if present) CUDA generator states."""
    return dict(python=random.getstate(), numpy=np.random.get_state(),
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def set_rng_state(state: RNGState) -> None:
    """Inverse of :func:`get_rng_state`."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None:
        torch.cuda.set_rng_state_all(state['cuda'])


class _RestoreAfterSkip:
    """Iterator proxy: restore ``state`` once ``skip`` batches have been drawn.

    MMEngine's ``IterBasedTrainLoop`` re-reads the batches it already trained on when resuming
    (running the random data pipeline again), with no hook between that and the next batch.
    """

    def __init__(self, iterator: Iterator, skip: int, state: RNGState) -> None:
        self.iterator, self.skip, self.state = iterator, skip, state

    def __iter__(self) -> '_RestoreAfterSkip':
        return self

    def __next__(self) -> Any:
        if self.skip == 0 and self.state is not None:
            set_rng_state(self.state)
            self.state = None
        self.skip -= 1
        return next(self.iterator)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the RNG states of all ranks in every checkpoint; restore them on resume.

    States are gathered after each training iteration and epoch, just before
    ``CheckpointHook`` (priority VERY_LOW) saves on rank 0 only. Validation runs with a copy of
    the training streams (restored after it), so a resumed run, which skips the validation at
    its resume point, draws the same numbers as an uninterrupted one. A checkpoint without RNG
    states (or from another number of ranks) still resumes, with a warning.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._states: Optional[List[RNGState]] = None
        self._pending: Optional[RNGState] = None
        self._before_val: Optional[RNGState] = None

    def _capture(self) -> None:
        self._states = all_gather_object(get_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._capture()

    def after_train_epoch(self, runner) -> None:
        self._capture()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is not None:
            checkpoint['rng_state'] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):   # load_from: weights only, no run state
            return
        states = checkpoint.get('rng_state')
        if states is None:
            print_log('the resumed checkpoint holds no RNG state (saved without RNGStateHook): '
                      'the run continues, but not bit-exactly as an uninterrupted one',
                      logger='current', level=logging.WARNING)
        elif len(states) != get_world_size():
            print_log(f'the resumed checkpoint holds RNG states of {len(states)} ranks, this '
                      f'run has {get_world_size()}: RNG states not restored, the run will not '
                      'be bit-exact', logger='current', level=logging.WARNING)
        else:
            self._pending = states[get_rank()]

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(loop.dataloader_iterator, loop.iter,
                                                         self._pending)
        else:
            set_rng_state(self._pending)
        self._pending = None

    def before_val(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
