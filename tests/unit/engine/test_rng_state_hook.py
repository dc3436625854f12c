"""RNGStateHook units: state round trip, restore points, old checkpoints (fast, in-process)."""
import glob
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import IterBasedTrainLoop

from mixedae.engine.hooks.rng_state_hook import (RNGStateHook, _RestoreAfterSkip, _ResumeMidEpoch,
                                                 get_rng_state, set_rng_state)
from support import ROOT


def draw():
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_state_round_trip_replays_every_stream():
    state = get_rng_state()
    first = [draw() for _ in range(3)]
    set_rng_state(state)
    assert [draw() for _ in range(3)] == first


def test_restore_waits_for_the_skipped_batches():
    random.seed(0)
    state = get_rng_state()
    expected = draw()
    random.seed(1)
    proxy = _RestoreAfterSkip(iter(range(10)), skip=3, state=state)
    assert [next(proxy) for _ in range(3)] == [0, 1, 2]
    draw()                               # the state is not restored during the skip
    assert next(proxy) == 3 and draw() == expected
    assert next(proxy) == 4 and draw() != expected   # and only once


def test_checkpoint_round_trip_and_validation_isolation():
    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True,
                             train_loop=SimpleNamespace(iter=0, epoch=0, dataloader=[]))
    hook.after_train_epoch(runner)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draw()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train_epoch(runner)
    hook.before_val(runner)
    draw()                               # validation draws numbers ...
    hook.after_val(runner)
    assert draw() == expected            # ... that training never sees


def test_load_from_leaves_the_streams_alone():
    hook = RNGStateHook()
    hook.after_train_iter(None, 0)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), checkpoint)
    assert hook._pending is None
    hook.after_load_checkpoint(SimpleNamespace(), checkpoint)     # a runner without _resume
    assert hook._pending is None


def test_nothing_is_saved_or_restored_before_it_was_captured():
    hook = RNGStateHook()
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    assert checkpoint == {}
    state = get_rng_state()
    expected = draw()
    set_rng_state(state)
    hook.after_val(None)                       # no validation started: the streams stay
    hook.before_val(None)
    hook.after_val(None)
    hook.after_val(None)                       # restored once only
    assert draw() == expected


def test_old_checkpoint_resumes_with_a_warning(tmp_path):
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance(f'rng_state_hook:{log_file}', log_file=str(log_file))
    hook = RNGStateHook()
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), {'state_dict': {}})
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), {'rng_state': [{}, {}]})
    log = log_file.read_text()
    assert (' - WARNING - the resumed checkpoint holds no RNG state (saved without '
            'RNGStateHook): the run continues, but not bit-exactly as an uninterrupted one\n'
            in log)
    assert (' - WARNING - the resumed checkpoint holds RNG states of 2 ranks, this run has 1: '
            'RNG states not restored, the run will not be bit-exact\n' in log)
    assert hook._pending is None


def test_every_config_saves_rng_states():
    configs = [c for c in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
               if '_base_' not in c]
    assert len(configs) > 20
    for path in configs:
        types = [h['type'] for h in Config.fromfile(path).get('custom_hooks', [])]
        assert any(t.split('.')[-1] == 'RNGStateHook' for t in types), path


def resumed_hook(state):
    """A hook that has just loaded a resumed checkpoint holding ``state`` (one rank)."""
    hook = RNGStateHook()
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), {'rng_state': [state]})
    return hook


def iter_loop(done, batches):
    loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    loop._iter, loop.dataloader_iterator = done, iter(batches)
    return loop


def test_an_iteration_based_resume_restores_after_the_replayed_batches():
    random.seed(0)
    state = get_rng_state()
    expected = draw()
    random.seed(1)
    hook, loop = resumed_hook(state), iter_loop(1, range(5))
    hook.before_train_epoch(SimpleNamespace(train_loop=loop))
    assert isinstance(loop.dataloader_iterator, _RestoreAfterSkip)
    assert next(loop.dataloader_iterator) == 0                         # the replayed batch
    assert draw() != expected
    assert next(loop.dataloader_iterator) == 1 and draw() == expected
    hook.before_train_epoch(SimpleNamespace(train_loop=loop))            # nothing pending now
    assert hook._pending is None


@pytest.mark.parametrize('loop', [iter_loop(0, range(3)),
                                  SimpleNamespace(iter=4, epoch=2, dataloader=[None] * 2)],
                         ids=['iteration-0', 'epoch-based'])
def test_other_resumes_restore_at_once(loop):
    random.seed(0)
    state = get_rng_state()
    expected = draw()
    random.seed(1)
    iterator = getattr(loop, 'dataloader_iterator', None)
    hook = resumed_hook(state)
    hook.before_train_epoch(SimpleNamespace(train_loop=loop))
    assert draw() == expected and hook._pending is None
    assert getattr(loop, 'dataloader_iterator', None) is iterator
    hook.before_train_epoch(SimpleNamespace(train_loop=loop))            # and only once
    assert draw() != expected


def test_a_mid_epoch_loader_skips_on_its_first_iteration_only():
    class Loader(list):
        batch_size = 2

    proxy = _ResumeMidEpoch(Loader([0, 1, 2, 3]), skip=2, state=None)
    assert list(proxy) == [2, 3]
    assert list(proxy) == [0, 1, 2, 3]
    assert len(proxy) == 4 and proxy.batch_size == 2
