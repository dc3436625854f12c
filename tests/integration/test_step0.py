"""The "random init" floor is the pretraining run's own start: ``tools/init_backbone.py``
writes exactly the encoder ``tools/train.py`` starts from with the same seed."""
import os
import sys

import pytest
import torch

from mixedae.utils.checkpoint import load_checkpoint_file
from support import ROOT, run_in_repo

pytestmark = pytest.mark.slow   # tools/train.py in a subprocess

PRETRAIN = {'mae': 'configs/pretrain/mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
            'mixedae': 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'}


@pytest.mark.parametrize('method', ['mae', 'mixedae'])
def test_step0_backbone_is_the_runs_start(tmp_path, images, method):
    config = os.path.join(ROOT, PRETRAIN[method])
    # two epochs at learning rate 0: AdamW leaves every weight as it started (decay is lr * wd)
    out = run_in_repo([sys.executable, 'tools/train.py', config, '--work-dir',
                       str(tmp_path / 'run'), '--cfg-options',
                       f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_epochs=2',
                       'optim_wrapper.optimizer.lr=0.0', 'randomness.seed=7'])
    assert out.returncode == 0, out.stderr[-3000:]
    run = load_checkpoint_file(str(tmp_path / 'run/epoch_2.pth'))['state_dict']
    started = {k[len('backbone.'):]: v for k, v in run.items() if k.startswith('backbone.')}

    out = run_in_repo([sys.executable, 'tools/init_backbone.py', config,
                       str(tmp_path / 'step0.pth'), '--seed', '7'])
    assert out.returncode == 0, out.stderr[-3000:]
    step0 = load_checkpoint_file(str(tmp_path / 'step0.pth'))
    assert step0['meta']['src_format'] == 'mixedae'
    written = step0['state_dict']
    assert set(written) <= set(started) and 'pos_embed' in written
    for name, value in written.items():
        assert torch.equal(value, started[name]), name
    # MAE's initialisation, not timm's: fixed sin-cos positions (first half of a row: sines of
    # the column index, so the class-token row is all zeros)
    assert torch.equal(written['pos_embed'][0, 0], torch.zeros_like(written['pos_embed'][0, 0]))

    other = run_in_repo([sys.executable, 'tools/init_backbone.py', config,
                         str(tmp_path / 'seed8.pth'), '--seed', '8'])
    assert other.returncode == 0, other.stderr[-3000:]
    assert not torch.equal(load_checkpoint_file(str(tmp_path / 'seed8.pth'))['state_dict']
                           ['blocks.0.attn.qkv.weight'], written['blocks.0.attn.qkv.weight'])
