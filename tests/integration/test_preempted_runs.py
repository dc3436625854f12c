"""Preemption through the tools: SIGTERM at a random iteration of tools/train.py (one process)
or tools/dist_train.sh (two gloo processes), then --resume, ends bit-identical with an
uninterrupted run (weights, optimizer state, RNG states of every rank)."""
import os
import random
import re
import signal
import subprocess
import sys

import pytest

from mixedae.datasets.synthetic import write_dataset
from mixedae.engine.hooks import EXIT_PREEMPTED
from support import ROOT, assert_identical, free_port
from test_exact_resume import ADE, PRETRAIN, train

pytestmark = pytest.mark.slow   # tools/train.py in subprocesses


def sigterm_at(cmd, iteration, logged_iteration):
    """Run ``cmd``; SIGTERM it once ``logged_iteration(line)`` (the iteration a log line
    reports, or None) reaches ``iteration``. Its exit status and output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED='1',
                                               PYTHON=sys.executable,
                                               PORT=str(free_port())))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        logged = logged_iteration(line)
        if logged is not None and logged >= iteration:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    return proc.wait(timeout=300), ''.join(lines)


def check_preempted(status, log, work_dir, context):
    """Exit status 75 and the one-line message; last_checkpoint names the saved file. The
    iteration the run stopped after."""
    assert status == EXIT_PREEMPTED, f'{context}: status {status}\n{log[-3000:]}'
    found = re.search(r'preempted \(SIG\w+\): stopped after iteration (\d+), saved (\S+); '
                      r'continue with the same command plus --resume', log)
    assert found, f'{context}: no preemption message\n{log[-3000:]}'
    assert (work_dir / 'last_checkpoint').read_text() == found.group(2), context
    return int(found.group(1))


def pretrain_iteration(line):
    """The global iteration of a tiny pretraining log line (2 iterations per epoch)."""
    found = re.search(r'Epoch\(train\) +\[(\d+)\]\[(\d+)/2\]', line)
    return None if found is None else (int(found.group(1)) - 1) * 2 + int(found.group(2))


def test_sigterm_then_resume_pretraining_is_bit_identical(tmp_path, images):
    # 5 epochs of 2 iterations, epoch-based: odd stops fall in the middle of an epoch
    options = [f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_epochs=5',
               'default_hooks.checkpoint.max_keep_ckpts=10']
    train(PRETRAIN, tmp_path / 'whole', options)
    at, cut = random.randint(1, 8), tmp_path / 'cut'
    status, log = sigterm_at([sys.executable, 'tools/train.py', PRETRAIN, '--work-dir', str(cut),
                              '--cfg-options', *options], at, pretrain_iteration)
    stopped = check_preempted(status, log, cut, f'SIGTERM once iteration {at} was logged')
    train(PRETRAIN, cut, options, resume='auto')
    assert_identical(tmp_path / 'whole/epoch_5.pth', cut / 'epoch_5.pth',
                     f'SIGTERM once iteration {at} was logged, stopped after {stopped}')


def ade_iteration(line):
    found = re.search(r'Iter\(train\) +\[ *(\d+)/', line)
    return None if found is None else int(found.group(1))


def test_sigterm_then_resume_two_process_ade20k_is_bit_identical(tmp_path):
    root = write_dataset(str(tmp_path / 'data'), num_train=12, num_val=2, size=(64, 80), seed=0,
                         views=('ade20k',))['ade20k']
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += ['train_cfg.max_iters=8', 'train_cfg.val_interval=4',
                'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
                'default_hooks.checkpoint.interval=4', 'default_hooks.checkpoint.max_keep_ckpts=10']
    launch = ['bash', 'tools/dist_train.sh', ADE, '2']
    whole, cut = tmp_path / 'whole', tmp_path / 'cut'
    status, log = sigterm_at([*launch, '--work-dir', str(whole), '--cfg-options', *options],
                             10 ** 9, ade_iteration)
    assert status == 0, log[-3000:]
    at = random.randint(1, 6)
    status, log = sigterm_at([*launch, '--work-dir', str(cut), '--cfg-options', *options], at,
                             ade_iteration)
    stopped = check_preempted(status, log, cut, f'SIGTERM once iteration {at} was logged')
    status, log = sigterm_at([*launch, '--work-dir', str(cut), '--resume', '--cfg-options',
                              *options], 10 ** 9, ade_iteration)
    assert status == 0, log[-3000:]
    assert_identical(whole / 'iter_8.pth', cut / 'iter_8.pth',
                     f'SIGTERM once iteration {at} was logged, stopped after {stopped}')
