"""Bit-exact resume (RNGStateHook): a run killed after a checkpoint and resumed ends with the
same tensors, bit for bit, as an uninterrupted run."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from mixedae.datasets.synthetic import write_dataset
from support import ROOT, assert_identical

pytestmark = pytest.mark.slow   # tools/train.py in subprocesses

PRETRAIN = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
ADE = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')


def train(config, work_dir, options, resume=None, wait_for=None):
    """Run tools/train.py; with ``wait_for``, SIGKILL it once that checkpoint is recorded."""
    cmd = [sys.executable, os.path.join(ROOT, 'tools/train.py'), config, '--work-dir',
           str(work_dir), *(['--resume', str(resume)] if resume else []), '--cfg-options',
           *options]
    if wait_for is None:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout + out.stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    record, deadline = work_dir / 'last_checkpoint', time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
            record.exists() and record.read_text().strip().endswith(wait_for)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)   # at whatever iteration it has reached by now
    proc.wait()
    assert (work_dir / wait_for).exists(), f'the run never saved {wait_for}'
    return None


def test_pretraining_resumes_bit_exactly(tmp_path, images):
    options = [f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_epochs=5',
               'default_hooks.checkpoint.max_keep_ckpts=10']
    train(PRETRAIN, tmp_path / 'whole', options)
    epoch = random.randint(1, 3)
    killed = tmp_path / 'killed'
    train(PRETRAIN, killed, options, wait_for=f'epoch_{epoch}.pth')
    log = train(PRETRAIN, killed, options, resume=killed / f'epoch_{epoch}.pth')
    assert f'resumed epoch: {epoch}' in log
    assert_identical(tmp_path / 'whole/epoch_5.pth', killed / 'epoch_5.pth',
                     f'resumed from epoch {epoch}')


def test_ade20k_resumes_bit_exactly(tmp_path):
    root = write_dataset(str(tmp_path / 'data'), num_train=12, num_val=2, size=(64, 80), seed=0,
                         views=('ade20k',))['ade20k']
    # validation at iteration 10 lies between a checkpoint and the next batch
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += ['train_cfg.max_iters=20', 'train_cfg.val_interval=10',
                'default_hooks.checkpoint.interval=5', 'default_hooks.checkpoint.max_keep_ckpts=10']
    train(ADE, tmp_path / 'whole', options)
    it = random.choice([5, 10, 15])
    killed = tmp_path / 'killed'
    train(ADE, killed, options, wait_for=f'iter_{it}.pth')
    train(ADE, killed, options, resume=killed / f'iter_{it}.pth')
    assert_identical(tmp_path / 'whole/iter_20.pth', killed / 'iter_20.pth',
                     f'resumed from iteration {it}')
