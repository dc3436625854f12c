"""hr_acc only on the iterations whose logs use it: the schedule, the model switch, and a
training run whose logs equal those of a run that computes hr_acc every iteration."""
import glob
import json
import os
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook, LoggerHook
from mmengine.runner import LogProcessor, Runner

from support import ROOT
from mixedae.engine.hooks.hr_acc_schedule_hook import HrAccScheduleHook, logs_within
from mixedae.models import MixedAE

TINY_CFG = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')


def test_logs_within_follows_logger_hook():
    """Epochs of 7 batches, a log after every 3rd (batches 2 and 5), window 2."""
    needs = [logs_within(i, 7, 3, 2) for i in range(7)]
    assert needs == [False, True, True, False, True, True, False]
    # ignore_last=False also logs after the epoch's last batch (6)
    assert [logs_within(i, 7, 3, 2, ignore_last=False) for i in range(7)] == [
        False, True, True, False, True, True, True]
    # a window reaching into the next epoch: batch 6 precedes the next epoch's batches 0 and 1
    assert logs_within(6, 7, 2, 3) and not logs_within(6, 7, 4, 1)
    assert all(logs_within(i, 7, 1, 1) for i in range(7))            # interval 1: always


def test_set_hr_acc_drops_only_hr_acc():
    model = MixedAE(backbone=dict(type='mixedae.MixedViT', img_size=32, patch_size=8,
                                  embed_dim=32, depth=2, num_heads=4, group_size=4),
                    decoder=dict(type='mixedae.MAEDecoder', decoder_embed_dim=16, depth=1,
                                 num_heads=2))
    images = torch.randn(8, 3, 32, 32)
    torch.manual_seed(1)
    with_acc = model.loss(images)
    model.set_hr_acc(False)
    torch.manual_seed(1)
    without = model.loss(images)
    assert set(with_acc) == {'loss_rec', 'loss_hc', 'hr_acc'}
    assert set(without) == {'loss_rec', 'loss_hc'}
    for key in without:
        assert torch.equal(with_acc[key], without[key]), key


class RecordHrAcc(Hook):
    """Which training iterations returned hr_acc."""

    def __init__(self):
        self.computed = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.computed.append('hr_acc' in outputs)


def fake_runner(**log_processor):
    """What the hook reads: a LoggerHook logging every 3rd batch, epochs of 7 batches."""
    return SimpleNamespace(hooks=[LoggerHook(interval=3)], train_dataloader=[None] * 7,
                           log_processor=LogProcessor(**log_processor))


def test_the_window_counts_only_when_hr_acc_is_smoothed():
    hook = HrAccScheduleHook()
    current = fake_runner(window_size=2)                       # logs hr_acc's current value
    assert [hook.needs_hr_acc(current, i) for i in range(7)] == [
        False, False, True, False, False, True, False]
    smoothed = fake_runner(window_size=2, mean_pattern=r'.*(loss|hr_acc).*')
    assert [hook.needs_hr_acc(smoothed, i) for i in range(7)] == [
        False, True, True, False, True, True, False]
    custom = fake_runner(custom_cfg=[dict(data_src='hr_acc', window_size='global',
                                          method_name='mean')])
    assert all(hook.needs_hr_acc(custom, i) for i in range(7))
    no_logger = SimpleNamespace(hooks=[], train_dataloader=[None] * 7,
                                log_processor=LogProcessor())
    assert not any(hook.needs_hr_acc(no_logger, i) for i in range(7))


def test_the_window_and_last_batch_follow_the_processor_and_logger():
    hook = HrAccScheduleHook()
    anchored = fake_runner(window_size=2, mean_pattern=r'^hr_acc$')   # smooths hr_acc only
    assert [hook.needs_hr_acc(anchored, i) for i in range(7)] == [
        False, True, True, False, True, True, False]
    last = fake_runner(window_size=2)
    last.hooks = [LoggerHook(interval=3, ignore_last=False)]      # logs after batch 6 too
    assert [hook.needs_hr_acc(last, i) for i in range(7)] == [
        False, False, True, False, False, True, True]


class Switch(torch.nn.Module):
    """Records what the hook tells the model."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def set_hr_acc(self, enabled):
        self.calls.append(enabled)


def test_before_train_iter_switches_the_model_and_unwraps_ddp():
    from mmengine.model import MMDistributedDataParallel
    hook, runner = HrAccScheduleHook(), fake_runner(window_size=2)
    runner.model = Switch()
    for i in range(7):
        hook.before_train_iter(runner, i)
    assert runner.model.calls == [False, False, True, False, False, True, False]
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    torch.nn.Module.__init__(wrapped)
    wrapped.module = Switch()
    runner.model = wrapped
    hook.before_train_iter(runner, 2)
    assert wrapped.module.calls == [True]


def train_logs(work_dir, images, schedule: bool):
    """Two epochs of 8 batches of 4 images, a log after every 3rd batch, smoothing window 2:
    (the logged records, which iterations computed hr_acc)."""
    cfg = Config.fromfile(TINY_CFG)
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': str(images),
                         'train_dataloader.batch_size': 4, 'train_cfg.max_epochs': 2,
                         'default_hooks.logger.interval': 3, 'log_processor.window_size': 2,
                         'default_hooks.checkpoint.interval': 10,
                         'work_dir': str(work_dir), 'experiment_name': work_dir.name})
    if not schedule:
        cfg.custom_hooks = [h for h in cfg.custom_hooks
                            if h['type'] != 'mixedae.HrAccScheduleHook']
    runner = Runner.from_cfg(cfg)
    record = RecordHrAcc()
    runner.register_hook(record, priority='LOWEST')
    runner.train()
    path, = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    with open(path) as f:
        logs = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in ('time', 'data_time')} for r in logs], \
        record.computed


@pytest.mark.slow
def test_scheduled_hr_acc_keeps_the_logs(tmp_path, images):
    logs, computed = train_logs(tmp_path / 'scheduled', images, schedule=True)
    every_logs, every = train_logs(tmp_path / 'every', images, schedule=False)
    assert [r['step'] for r in logs] == [3, 6, 11, 14] and all('hr_acc' in r for r in logs)
    assert logs == every_logs
    assert every == [True] * 16
    assert computed == [False, False, True, False, False, True, False, False] * 2
