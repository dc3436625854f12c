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
    (running the random data pipeline again), with no hook between that and the next batch;
    :class:`_ResumeMidEpoch` does the same for an epoch-based loop.
    """

    def __init__(self, iterator: Iterator, skip: int, state: Optional[RNGState]) -> None:
        self.iterator, self.skip, self.state = iterator, skip, state

    def __iter__(self) -> '_RestoreAfterSkip':
        return self

    def __next__(self) -> Any:
        if self.skip == 0 and self.state is not None:
            set_rng_state(self.state)
            self.state = None
        self.skip -= 1
        return next(self.iterator)


class _ResumeMidEpoch:
    """Data loader proxy for the epoch an epoch-based run resumes in the middle of (after a
    preemption checkpoint): iterating it re-reads and drops the ``skip`` batches already
    trained on, then restores ``state`` before the next batch is drawn.

    MMEngine's ``EpochBasedTrainLoop`` would train on the whole epoch again. Only the first
    iteration skips; every other attribute is the wrapped loader's. The resumed epoch's
    ``batch_idx`` (seen by logging hooks) counts from 0 at the first batch trained.
    """

    def __init__(self, dataloader, skip: int, state: Optional[RNGState]) -> None:
        self.dataloader, self.skip, self.state = dataloader, skip, state

    def __iter__(self) -> Iterator:
        skip, state, self.skip, self.state = self.skip, self.state, 0, None
        iterator = _RestoreAfterSkip(iter(self.dataloader), skip, state)
        for _ in range(skip):
            next(iterator)
        return iterator

    def __len__(self) -> int:
        return len(self.dataloader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataloader, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the RNG states of all ranks in every checkpoint; restore them on resume.

    States are gathered after each training iteration and epoch, just before
    ``CheckpointHook`` (priority VERY_LOW) saves on rank 0 only. Validation runs with a copy of
    the training streams (restored after it), so a resumed run, which skips the validation at
    its resume point, draws the same numbers as an uninterrupted one. A checkpoint saved in
    the middle of an epoch of an epoch-based loop (``PreemptionHook``) resumes there: the
    epoch's first batches are re-read, not trained on. A checkpoint without RNG states (or
    from another number of ranks) still resumes, with a warning.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._states: Optional[List[RNGState]] = None
        self._pending: Optional[RNGState] = None
        self._resumed = False
        self._before_val: Optional[RNGState] = None

    def _capture(self) -> None:
        self._states = all_gather_object(get_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._capture()

    def after_train_epoch(self, runner) -> None:
        self._capture()
        loop = runner.train_loop
        if isinstance(loop.dataloader, _ResumeMidEpoch):
            loop.dataloader = loop.dataloader.dataloader

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is not None:
            checkpoint['rng_state'] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):   # load_from: weights only, no run state
            return
        self._resumed = True
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
        if not self._resumed:
            return
        loop, state = runner.train_loop, self._pending
        self._resumed, self._pending = False, None
        done = loop.iter if isinstance(loop, IterBasedTrainLoop) else \
            loop.iter - loop.epoch * len(loop.dataloader)   # batches of this epoch trained on
        if done == 0:
            if state is not None:
                set_rng_state(state)
        elif isinstance(loop, IterBasedTrainLoop):   # the loop itself re-reads `done` batches
            loop.dataloader_iterator = _RestoreAfterSkip(loop.dataloader_iterator, done, state)
        else:
            loop.dataloader = _ResumeMidEpoch(loop.dataloader, done, state)

    def before_val(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
