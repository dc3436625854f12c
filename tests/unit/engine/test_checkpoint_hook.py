"""AtomicCheckpointHook on the toy MMEngine run of test_preemption.py: the options it passes on
to the runner, rotation (kept-all, checkpoint folders) and save_now not writing twice."""
import os
import signal

import pytest
from mmengine.hooks import Hook

from mixedae.engine.hooks import Preempted
from mixedae.utils.checkpoint import load_checkpoint_file
from test_preemption import SignalAt, toy_runner


class AfterCheckpoint(Hook):
    """Call ``action(runner)`` after each epoch, once the checkpoint hook has saved."""

    priority = 'LOWEST'

    def __init__(self, action):
        self.action = action

    def after_train_epoch(self, runner):
        self.action(runner)


def test_options_reach_the_saved_file_and_the_message_hub(tmp_path):
    runner = toy_runner(tmp_path, by_epoch=True, save_optimizer=False,
                        save_param_scheduler=False)
    runner.train()
    ckpt = load_checkpoint_file(tmp_path / 'epoch_3.pth')
    assert 'optimizer' not in ckpt and 'param_schedulers' not in ckpt
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (3, 12)
    assert runner.message_hub.get_info('last_ckpt') == str(tmp_path / 'epoch_3.pth')


def test_max_keep_ckpts_zero_keeps_every_checkpoint(tmp_path):
    toy_runner(tmp_path, by_epoch=True, max_keep_ckpts=0).train()
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == [
        'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']


def test_an_outdated_checkpoint_folder_is_removed(tmp_path):
    def as_folder(runner):   # epoch_1 saved as a folder, as DeepSpeed does
        if runner.epoch == 0:
            os.remove(tmp_path / 'epoch_1.pth')
            os.mkdir(tmp_path / 'epoch_1.pth')
            (tmp_path / 'epoch_1.pth' / 'model.pt').write_bytes(b'x')
    toy_runner(tmp_path, by_epoch=True, max_keep_ckpts=1,
               extra_hooks=[AfterCheckpoint(as_folder)]).train()
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == ['epoch_3.pth']


def test_save_now_does_not_write_an_iteration_that_was_just_saved(tmp_path):
    runner = toy_runner(tmp_path, by_epoch=False, extra_hooks=[SignalAt(3, signal.SIGTERM)])
    saved, save = [], runner.save_checkpoint
    runner.save_checkpoint = lambda out_dir, filename, *args, **kwargs: (
        saved.append(filename), save(out_dir, filename, *args, **kwargs))
    with pytest.raises(Preempted) as stop:
        runner.train()
    assert stop.value.checkpoint == str(tmp_path / 'iter_4.pth')
    assert saved == ['iter_4.pth']
