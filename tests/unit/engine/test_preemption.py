"""PreemptionHook and AtomicCheckpointHook on a toy MMEngine run (in-process, a second each):
a signal at a random iteration, then resume, ends bit-identical with an uninterrupted run; a
failed or interrupted checkpoint write leaves the previous checkpoint as the one resumed."""
import errno
import os
import random
import signal
import uuid

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mixedae.engine.hooks import EXIT_PREEMPTED, Preempted
from mixedae.utils.checkpoint import load_checkpoint_file


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


def toy_runner(work_dir, by_epoch, resume=False, extra_hooks=(), max_keep_ckpts=-1):
    """4 iterations per epoch, 3 epochs (or 12 iterations), preemption-safe hooks."""
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
                                           interval=interval, max_keep_ckpts=max_keep_ckpts),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mixedae.RNGStateHook'), dict(type='mixedae.PreemptionHook'),
                      *extra_hooks])


def tensors(obj, prefix=''):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, np.ndarray):
        return {prefix: torch.from_numpy(obj)}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, (list, tuple)) else []
    return {k: v for key, value in items for k, v in tensors(value, f'{prefix}/{key}').items()}


def assert_identical(path_a, path_b, context):
    a, b = load_checkpoint_file(path_a), load_checkpoint_file(path_b)
    assert a['meta']['iter'] == b['meta']['iter'] == 12, context
    for entry in ('state_dict', 'optimizer', 'rng_state', 'param_schedulers'):
        ta, tb = tensors(a[entry]), tensors(b[entry])
        assert ta.keys() == tb.keys(), (context, entry)
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, f'{context}: {entry} differs at {differ[:3]}'
    assert a['param_schedulers'] == b['param_schedulers'], context


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epoch-based', 'iter-based'])
def test_signal_then_resume_is_bit_identical(tmp_path, by_epoch):
    whole = toy_runner(tmp_path / 'whole', by_epoch)
    whole.train()
    seed = random.SystemRandom().randrange(2 ** 32)
    at, sig = random.Random(seed).choice([(i, s) for i in range(11)
                                          for s in (signal.SIGTERM, signal.SIGUSR1)])
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
    with pytest.raises(ValueError, match='needs mixedae.AtomicCheckpointHook'):
        runner.train()
