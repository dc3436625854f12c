"""The failure modes of issue 11 reproduced through the tools, as a user meets them.

Each test failed on the code before the guards: a diverging run exited 0 with NaN checkpoints,
a pretraining checkpoint was evaluated on UperNet, out-of-range labels gave mIoU 0, a label map
of another size stopped training in the collate and a truncated JSON with a bare
JSONDecodeError (neither naming the file), a missing data root was found after the model was
built, and nothing guaranteed that a killed writer left no truncated file.
"""
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mixedae.datasets.synthetic import write_dataset
from mixedae.utils.checkpoint import load_checkpoint_file
from support import ROOT, data_root_options, run_in_repo

pytestmark = pytest.mark.slow
PY = sys.executable
PRETRAIN = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
ADE = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
COCO = os.path.join(ROOT, 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py')


def run(args, **kw):
    """A tool (``args``: its script and arguments) run by this Python from the repository."""
    return run_in_repo([PY, *args], **kw)


def non_finite(state):
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def test_diverging_pretraining_stops_at_once_and_keeps_its_last_good_checkpoint(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):           # one iteration per epoch: a checkpoint after every iteration
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(
            images / f'{i:02d}.png')
    work = tmp_path / 'work'
    # a 2-iteration warm-up from lr 1e-3 (iteration 1 is sane) to 1e6, which diverges
    out = run(['tools/train.py', PRETRAIN, '--work-dir', str(work), '--cfg-options',
               f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_epochs=12',
               'optim_wrapper.optimizer.lr=1e6', 'param_scheduler.0.start_factor=1e-9',
               'param_scheduler.0.end=2', 'param_scheduler.1.begin=2',
               'default_hooks.checkpoint.max_keep_ckpts=1'])
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    stop = re.search(r'non-finite (?:values at|weights after) iteration (\d+)', log)
    assert stop, log[-3000:]
    stopped_at = int(stop.group(1))
    logged = [float(v) for v in re.findall(r'Epoch\(train\)\s+\[\d+\]\[\d+/\d+\].*?\bloss: (\S+)',
                                           log)]
    # every iteration before the stop was logged with a finite loss: it stopped at the first
    # non-finite value, never trained past one
    assert len(logged) == stopped_at - 1 and all(np.isfinite(logged)), (stopped_at, logged)
    on_disk = sorted(work.glob('*.pth'))
    assert on_disk, 'the last good checkpoint was lost'
    for path in on_disk:
        assert non_finite(load_checkpoint_file(path)['state_dict']) == [], path
    last = (work / 'last_checkpoint').read_text().strip()
    assert os.path.isfile(last) and f'Last good checkpoint: {last}' in log
    # the same message is in the work-dir log
    assert any('Last good checkpoint' in p.read_text() for p in work.rglob('*.log'))

    # a checkpoint with NaN weights is refused on resume, by name
    ckpt = load_checkpoint_file(last)
    name = next(iter(ckpt['state_dict']))
    ckpt['state_dict'][name].view(-1)[0] = float('nan')
    torch.save(ckpt, work / 'poisoned.pth')
    out = run(['tools/train.py', PRETRAIN, '--work-dir', str(work), '--resume',
               str(work / 'poisoned.pth'), '--cfg-options',
               f'train_dataloader.dataset.data_root={images}', 'train_cfg.max_epochs=12'])
    assert out.returncode != 0
    assert re.search(rf'poisoned\.pth: 1 non-finite tensor.*{re.escape(name)}', out.stderr)


def test_pretraining_checkpoint_is_refused_for_evaluation(ade_root, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mixedae.registry import MODELS
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(Config.fromfile(PRETRAIN).model)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'mixedae_pretrain.pth')
    work = tmp_path / 'work'
    args = ['tools/test.py', ADE, str(tmp_path / 'mixedae_pretrain.pth'), '--work-dir',
            str(work), '--out-metrics', str(tmp_path / 'm.json'), '--cfg-options',
            *data_root_options(ade_root)]
    out = run(args)
    assert out.returncode != 0
    assert re.search(r'mixedae_pretrain\.pth does not cover the model: missing keys \d+: '
                     r'auxiliary_head\..*; unexpected keys \d+: .*contrast_head', out.stderr)
    assert not (tmp_path / 'm.json').exists()
    assert any('does not cover the model' in p.read_text() for p in work.rglob('*.log'))
    out = run(args + ['--allow-partial'])           # the deliberate case still works
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'm.json').exists()


def test_out_of_range_labels_fail_the_evaluation_naming_the_file(ade_root, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    import mixedae  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(Config.fromfile(ADE).model)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'upernet.pth')
    root = tmp_path / 'data' / 'ade'
    write_dataset(str(tmp_path / 'data'), num_train=2, num_val=4, size=(64, 80), seed=0,
                  views=('ade20k',))
    bad = root / 'annotations/validation/ADE_valid_00000002.png'
    cv2.imwrite(str(bad), np.full((64, 80), 200, np.uint8))
    out = run(['tools/test.py', ADE, str(tmp_path / 'upernet.pth'), '--work-dir',
               str(tmp_path / 'work'), '--out-metrics', str(tmp_path / 'm.json'),
               '--cfg-options', *data_root_options(root)])
    assert out.returncode != 0
    assert f'{bad}: label values [199]' in out.stderr and '[200]' in out.stderr
    assert not (tmp_path / 'm.json').exists()


def test_annotation_of_another_size_stops_training_naming_both_files(tmp_path):
    root = tmp_path / 'ade'
    write_dataset(str(tmp_path), num_train=4, num_val=1, size=(64, 80), seed=0,
                  views=('ade20k',))
    bad = root / 'annotations/training/ADE_train_00000002.png'
    cv2.imwrite(str(bad), np.ones((76, 64), np.uint8))
    out = run(['tools/train.py', ADE, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               *data_root_options(root), 'train_cfg.max_iters=8', 'train_cfg.val_interval=100'])
    assert out.returncode != 0
    image = root / 'images/training/ADE_train_00000002.jpg'
    assert f'{bad}: annotation size (76, 64) (h, w) differs from its image {image} of size ' \
        '(64, 80)' in out.stderr


def test_truncated_coco_json_is_named(tmp_path):
    root = write_dataset(str(tmp_path), 2, 1, (64, 80), seed=0, views=('coco',))['coco'] + '/'
    ann_file = os.path.join(root, 'annotations/instances_train2017.json')
    text = open(ann_file).read()
    open(ann_file, 'w').write(text[:len(text) // 2])
    out = run(['tools/train.py', COCO, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               *[f'{k}.dataset.data_root={root}'
                 for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')],
               f'val_evaluator.ann_file={root}annotations/instances_val2017.json'])
    assert out.returncode != 0
    assert f'{ann_file}: not valid JSON' in out.stderr


def test_missing_inputs_are_listed_before_the_model_is_built(tmp_path):
    work = tmp_path / 'work'
    out = run(['tools/train.py', ADE, '--work-dir', str(work), '--cfg-options',
               f'train_dataloader.dataset.data_root={tmp_path}/nowhere',
               f'val_dataloader.dataset.data_root={tmp_path}/elsewhere',
               'model.backbone.init_cfg.type=Pretrained',
               f'model.backbone.init_cfg.checkpoint={tmp_path}/vit.pth'])
    assert out.returncode != 0
    for missing in ('nowhere', 'elsewhere', 'vit.pth'):
        assert missing in out.stderr
    assert not work.exists()        # the Runner (work dir, log, model) was never built


WRITER = """
import sys, torch
from mixedae.utils.io import atomic_write
with atomic_write(sys.argv[1], 'wb') as f:
    torch.save({'w': torch.zeros(1 << 20)}, f)    # 4 MiB written, then stuck mid-way
    print('writing', flush=True)
    f.write(b'x' * 4096)
    sys.stdin.read()
"""


@pytest.mark.parametrize('existing', [True, False])
def test_killed_writer_leaves_the_old_file_or_none(tmp_path, existing):
    target = tmp_path / 'backbone.pth'
    if existing:
        torch.save({'w': torch.ones(3)}, target)
    proc = subprocess.Popen([PY, '-c', WRITER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT, text=True)
    deadline = time.time() + 120
    assert proc.stdout.readline().strip() == 'writing' and time.time() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if existing:
        assert torch.equal(load_checkpoint_file(target)['w'], torch.ones(3))
    else:
        assert not target.exists()
