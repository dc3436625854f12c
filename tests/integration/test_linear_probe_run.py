"""The tiny linear probe end to end on generated data (CPU): train, test, an mIoU."""
import json
import sys

import pytest
import torch

from mixedae.utils.checkpoint import load_checkpoint_file
from support import REPO, data_root_options, run_in_repo

PROBE = REPO.config('ade20k_linear-tiny')
PY = sys.executable


@pytest.mark.slow
def test_tiny_probe_trains_a_frozen_backbone_and_reports_miou(ade_root, tmp_path):
    work = tmp_path / 'work'
    out = run_in_repo([PY, 'tools/train.py', PROBE, '--work-dir', str(work), '--cfg-options',
               *data_root_options(ade_root), 'train_cfg.max_iters=20',
               'train_cfg.val_interval=20', 'default_hooks.checkpoint.interval=10'])
    assert out.returncode == 0, out.stderr[-4000:]
    first, last = (load_checkpoint_file(work / f'iter_{i}.pth')['state_dict']
                   for i in (10, 20))
    backbone = [k for k in last if k.startswith('backbone.')]
    assert backbone and all(torch.equal(first[k], last[k]) for k in backbone)
    assert not torch.equal(first['decode_head.conv_seg.weight'],
                           last['decode_head.conv_seg.weight'])
    metrics_file = tmp_path / 'metrics.json'
    out = run_in_repo([PY, 'tools/test.py', PROBE, str(work / 'iter_20.pth'), '--work-dir', str(work),
               '--out-metrics', str(metrics_file), '--cfg-options', *data_root_options(ade_root)])
    assert out.returncode == 0, out.stderr[-4000:]
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 < metrics['mIoU'] <= 100.0 and metrics['aAcc'] > 0
