"""tools/train.py on the tiny pretraining config: runs on CPU, is killed, resumes, finishes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mixedae.utils.checkpoint import load_checkpoint_file
from support import ROOT, load_tool

pytestmark = pytest.mark.slow   # every test here runs tools/train.py in a subprocess

TINY_CFG = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')


def train_cmd(work_dir, images, *options, resume=False):
    """One --cfg-options list (a second flag would replace the first)."""
    return [sys.executable, os.path.join(ROOT, 'tools/train.py'), TINY_CFG,
            '--work-dir', str(work_dir), *(['--resume'] if resume else []),
            '--cfg-options', f'train_dataloader.dataset.data_root={images}', *options]


def test_killed_run_resumes_and_finishes(tmp_path, images):
    work_dir = tmp_path / 'work'
    # 200 epochs are far more than it can run before the kill below
    proc = subprocess.Popen(train_cmd(work_dir, images, 'train_cfg.max_epochs=200',
                                      'default_hooks.checkpoint.max_keep_ckpts=50'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 240
    while not (work_dir / 'epoch_2.pth').exists() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work_dir / 'epoch_2.pth').exists(), 'the run never reached its second checkpoint'
    # the checkpoint MMEngine recorded as complete (a kill may cut a later one short)
    recorded = (work_dir / 'last_checkpoint').read_text().strip()
    last = int(os.path.basename(recorded).split('_')[1].split('.')[0])
    assert 1 <= last < 200   # epoch_2 may still be being recorded when killed
    target = last + 3
    done = subprocess.run(train_cmd(work_dir, images, f'train_cfg.max_epochs={target}',
                                    'default_hooks.checkpoint.max_keep_ckpts=50', resume=True),
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert f'resumed epoch: {last}' in log
    ckpt = load_checkpoint_file(work_dir / f'epoch_{target}.pth')  # a real MMEngine checkpoint
    assert ckpt['meta']['epoch'] == target
    assert all((work_dir / f'epoch_{e}.pth').exists() for e in range(1, target + 1))


def test_build_config_options(tmp_path):
    train = load_tool('train')
    args = train.parse_args([TINY_CFG, '--amp', '--amp-dtype', 'bfloat16', '--auto-scale-lr',
                             '--cfg-options', 'model.contrast_weight=0.5'])
    cfg = train.build_config(args)
    assert cfg.optim_wrapper.type == 'mixedae.AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.auto_scale_lr.enable and cfg.model.contrast_weight == 0.5
    assert cfg.work_dir.endswith('mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'          # no GPU here
    with pytest.raises(FileNotFoundError, match='--resume checkpoint not found'):
        train.build_config(train.parse_args([TINY_CFG, '--resume', str(tmp_path / 'x.pth')]))
    with pytest.raises(FileNotFoundError, match='config file not found'):
        train.build_config(train.parse_args([str(tmp_path / 'none.py')]))
    # --resume with nothing to resume is refused, not a silent start from scratch
    empty = str(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match=f'--resume: nothing to resume in {empty} '
                                                '\\(it has no last_checkpoint\\)'):
        train.build_config(train.parse_args([TINY_CFG, '--work-dir', empty, '--resume']))
    os.makedirs(empty)
    with open(os.path.join(empty, 'last_checkpoint'), 'w') as f:
        f.write(os.path.join(empty, 'epoch_1.pth'))
    cfg = train.build_config(train.parse_args([TINY_CFG, '--work-dir', empty, '--resume']))
    assert cfg.resume is True and cfg.load_from is None    # MMEngine finds the checkpoint


def test_pretrained_checkpoint_converts_to_transfer_backbone(tmp_path, images):
    work_dir = tmp_path / 'work'
    out = subprocess.run(train_cmd(work_dir, images, 'train_cfg.max_epochs=2'),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    convert = load_tool('convert_checkpoint')
    assert convert.main([str(work_dir / 'epoch_2.pth'), str(tmp_path / 'vit.pth'),
                         '--src-format', 'mixedae']) == 0
    from mixedae.models import ViT
    vit = ViT(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4,
              init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
    vit.init_weights()
    state = load_checkpoint_file(work_dir / 'epoch_2.pth')['state_dict']
    torch.testing.assert_close(vit.blocks[3].mlp.fc2.weight,
                               state['backbone.blocks.3.mlp.fc2.weight'])
