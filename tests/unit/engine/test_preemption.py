"""PreemptionHook and AtomicCheckpointHook on a toy MMEngine run (in-process, a second each):
a signal at a random iteration, then resume, ends bit-identical with an uninterrupted run; a
failed or interrupted checkpoint write leaves the previous checkpoint as the one resumed. Units:
the signal handlers, the message of a stop asked by another rank, the flag reduced over two
gloo ranks (one forked)."""
import datetime
import errno
import multiprocessing
import os
import random
import signal
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mixedae.engine.hooks import (EXIT_PREEMPTED, AtomicCheckpointHook, Preempted, PreemptionHook,
                                  RNGStateHook)
from mixedae.utils.checkpoint import load_checkpoint_file
from support import tensors


class NoisyData(Dataset):
    """Samples drawn with numpy's global generator: the data pipeline consumes RNG."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((4,), float(i)) + torch.from_numpy(np.random.rand(4)).float())


class NoisyModel(BaseModel):
    """A linear layer whose loss draws dropout-like noise from torch's global generator."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x, mode='loss'):
        out = self.fc(x * torch.rand_like(x))
        return dict(loss=(out ** 2).mean())


class SignalAt(Hook):
    """Send ``sig`` to this process after training iteration ``at`` (0-based)."""

    priority = 'HIGHEST'

    def __init__(self, at, sig):
        self.at, self.sig = at, sig

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), self.sig)


def toy_runner(work_dir, by_epoch, resume=False, extra_hooks=(), max_keep_ckpts=-1,
               **checkpoint_options):
    """4 iterations per epoch, 3 epochs (or 12 iterations), preemption-safe hooks;
    ``checkpoint_options``: more arguments of the checkpoint hook."""
    loop = dict(by_epoch=True, max_epochs=3) if by_epoch else dict(by_epoch=False, max_iters=12)
    interval = 1 if by_epoch else 4
    torch.manual_seed(0)   # the model is built before the Runner seeds the generators
    return Runner(
        model=NoisyModel(), work_dir=str(work_dir), experiment_name=uuid.uuid4().hex,
        train_dataloader=dict(dataset=NoisyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
        train_cfg=loop, resume=resume, randomness=dict(seed=0),
        default_hooks=dict(checkpoint=dict(type='mixedae.AtomicCheckpointHook', by_epoch=by_epoch,
                                           interval=interval, max_keep_ckpts=max_keep_ckpts,
                                           **checkpoint_options),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mixedae.RNGStateHook'), dict(type='mixedae.PreemptionHook'),
                      *extra_hooks])


def assert_identical(path_a, path_b, context):
    a, b = load_checkpoint_file(path_a), load_checkpoint_file(path_b)
    assert a['meta']['iter'] == b['meta']['iter'] == 12, context
    for entry in ('state_dict', 'optimizer', 'rng_state', 'param_schedulers'):
        ta, tb = tensors(a[entry]), tensors(b[entry])
        assert ta.keys() == tb.keys(), (context, entry)
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, f'{context}: {entry} differs at {differ[:3]}'
    assert a['param_schedulers'] == b['param_schedulers'], context


@pytest.mark.parametrize('stop', ['mid-epoch', 'random'])
@pytest.mark.parametrize('by_epoch', [True, False], ids=['epoch-based', 'iter-based'])
def test_signal_then_resume_is_bit_identical(tmp_path, by_epoch, stop):
    whole = toy_runner(tmp_path / 'whole', by_epoch)
    whole.train()
    if stop == 'random':
        seed = random.SystemRandom().randrange(2 ** 32)
        at, sig = random.Random(seed).choice([(i, s) for i in range(11)
                                              for s in (signal.SIGTERM, signal.SIGUSR1)])
    else:   # stopped after iteration 6, the second of epoch 2: checked on every run
        seed, at, sig = None, 5, signal.SIGUSR1
    context = f'{signal.Signals(sig).name} after iteration {at} (random seed {seed})'
    handler = signal.getsignal(sig)
    with pytest.raises(Preempted) as stop:
        toy_runner(tmp_path / 'cut', by_epoch, extra_hooks=[SignalAt(at, sig)]).train()
    assert signal.getsignal(sig) == handler, 'the handlers are put back'
    assert stop.value.iteration == at + 1, context
    assert stop.value.checkpoint == str(tmp_path / 'cut' / f'iter_{at + 1}.pth')
    assert (tmp_path / 'cut' / 'last_checkpoint').read_text() == stop.value.checkpoint
    message = str(stop.value)
    assert message.startswith(f'preempted ({signal.Signals(sig).name}): stopped after '
                              f'iteration {at + 1}') and '--resume' in message
    assert f'exit status {EXIT_PREEMPTED}' in message
    toy_runner(tmp_path / 'cut', by_epoch, resume=True).train()
    last = 'epoch_3.pth' if by_epoch else 'iter_12.pth'
    assert_identical(tmp_path / 'whole' / last, tmp_path / 'cut' / last, context)


def interrupt_second_save(monkeypatch, error):
    """Make the flush of the second checkpoint file written raise ``error``."""
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:   # 1: epoch_1.pth, 2: its last_checkpoint, 3: epoch_2.pth
            raise error
        real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)


@pytest.mark.parametrize('error', [KeyboardInterrupt(), OSError(errno.ENOSPC, 'No space')],
                         ids=['killed', 'disk-full'])
def test_failed_save_leaves_the_previous_checkpoint_resumable(tmp_path, monkeypatch, error):
    interrupt_second_save(monkeypatch, error)
    with pytest.raises(type(error)) as raised:
        toy_runner(tmp_path, by_epoch=True, max_keep_ckpts=1).train()
    if isinstance(error, OSError):
        assert str(tmp_path / 'epoch_2.pth') in str(raised.value)
    monkeypatch.undo()
    assert sorted(p for p in os.listdir(tmp_path) if not p[0].isdigit()) == [
        'epoch_1.pth', 'last_checkpoint'], 'max_keep_ckpts=1 removed epoch_1 or a temp file stayed'
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_1.pth')
    assert load_checkpoint_file(tmp_path / 'epoch_1.pth')['meta']['epoch'] == 1
    resumed = toy_runner(tmp_path, by_epoch=True, resume=True, max_keep_ckpts=1)
    resumed.train()
    assert resumed.train_loop.iter == 12
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == ['epoch_3.pth']


def test_preemption_needs_the_atomic_checkpoint_hook(tmp_path):
    runner = toy_runner(tmp_path, by_epoch=False)
    runner._hooks = [h for h in runner.hooks if type(h).__name__ != 'AtomicCheckpointHook']
    with pytest.raises(ValueError) as raised:
        runner.train()
    assert str(raised.value) == ('PreemptionHook needs mixedae.AtomicCheckpointHook among the '
                                 'hooks of the run (tools/train.py installs it)')


def test_handlers_are_put_back_once():
    before = signal.getsignal(signal.SIGTERM)
    hook = PreemptionHook()
    hook.before_run(SimpleNamespace(hooks=[AtomicCheckpointHook(interval=1), RNGStateHook()]))
    assert signal.getsignal(signal.SIGTERM) == hook._record
    hook.after_run(None)
    assert signal.getsignal(signal.SIGTERM) == before
    hook.after_run(None)                         # nothing left to put back
    assert signal.getsignal(signal.SIGTERM) == before


class SavesTo(AtomicCheckpointHook):
    def save_now(self, runner):
        return 'iter_5.pth'


def test_a_stop_asked_by_another_rank_says_so(monkeypatch):
    hook = PreemptionHook()
    monkeypatch.setattr(hook, '_stop_requested', lambda: True)   # the all-reduce said "stop"
    with pytest.raises(Preempted) as stop:
        hook.after_train_iter(SimpleNamespace(hooks=[SavesTo(interval=1)], iter=4), 0)
    assert (stop.value.reason, stop.value.iteration, stop.value.checkpoint) == (
        'signal received by another rank', 5, 'iter_5.pth')


def stop_seen_by_rank(rank, signalled, store):
    """Whether rank ``rank`` of 2 stops when only rank ``signalled`` got SIGTERM."""
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        hook = PreemptionHook()
        hook._received = signal.SIGTERM if rank == signalled else None
        return hook._stop_requested()
    finally:
        dist.destroy_process_group()


def rank_1(signalled, store):   # the forked rank's exit status says whether it stops
    os._exit(0 if stop_seen_by_rank(1, signalled, store) else 3)


@pytest.mark.parametrize('signalled', [0, 1])
def test_a_signal_on_one_rank_stops_every_rank(tmp_path, signalled):
    other = multiprocessing.get_context('fork').Process(target=rank_1,
                                                         args=(signalled, tmp_path / 'store'))
    other.start()
    try:
        assert stop_seen_by_rank(0, signalled, tmp_path / 'store')
    finally:
        other.join(60)
        if other.is_alive():   # waiting for a collective this rank never joined
            other.kill()
            other.join()
    assert other.exitcode == 0


def test_preemption_needs_the_rng_state_hook(tmp_path):
    # without the RNG states in the checkpoint a resumed run draws other batches: not exact
    runner = toy_runner(tmp_path, by_epoch=False)
    runner._hooks = [h for h in runner.hooks if type(h).__name__ != 'RNGStateHook']
    with pytest.raises(ValueError, match='PreemptionHook needs mixedae.RNGStateHook among the '
                                         'hooks of the run'):
        runner.train()
