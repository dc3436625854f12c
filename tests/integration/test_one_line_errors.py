"""Mistakes a user makes through the tools end in one `error:` line and status 2, never a
traceback: each case below was a traceback with status 1 (or 69 lines from every rank). In
process, a tool's mistake is a UserInputError, which run_tool prints as one line with status 2
(tests/unit/utils/test_cli.py); the launchers and one tool run as a user runs them."""
import json
import os
import socket
import subprocess
import sys

import pytest

from mixedae.datasets.synthetic import MANIFEST, write_dataset
from mixedae.utils.errors import UserInputError
from support import ROOT, data_root_options, free_port, load_tool

PY = sys.executable
PRETRAIN = 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'
ADE = 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
COCO = 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py'


def one_error_line(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, 'PYTHONPATH': ROOT, **(env or {})})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines and lines[-1].startswith('error: '), out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    return lines[-1]


def refused(tool, args, match):
    with pytest.raises(UserInputError, match=match):
        load_tool(tool).main(args)


@pytest.mark.slow   # starts tools/train.py as a user does
def test_a_training_mistake_through_the_tool(tmp_path, images):
    assert 'fp16 autocast needs a GPU' in one_error_line(
        [PY, 'tools/train.py', PRETRAIN, '--work-dir', str(tmp_path / 'w'), '--amp-dtype',
         'float16', '--cfg-options', f'train_dataloader.dataset.data_root={images}'])


def test_training_mistakes(tmp_path, images):
    train = [PRETRAIN, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
             f'train_dataloader.dataset.data_root={images}']
    refused('train', train + ['train_dataloader.batch_size=6'],
            'batch_size=6 is not a multiple of model.backbone.group_size=4')
    refused('train', train + ['model.backbone.init_cfg.checkpoint=x.pth'],
            'model.backbone.init_cfg has no type')
    blocked = tmp_path / 'a_file'
    blocked.write_text('')
    refused('train', [PRETRAIN, '--work-dir', str(blocked / 'w'), '--cfg-options',
                      f'train_dataloader.dataset.data_root={images}'],
            f'work dir {blocked}/w cannot be written')


def test_evaluation_mistakes(tmp_path, ade_root):
    refused('test', [ADE, str(tmp_path / 'none.pth'), '--work-dir', str(tmp_path)],
            'checkpoint not found: ')
    refused('test', [ADE, '', '--work-dir', str(tmp_path)], 'the checkpoint argument is empty')
    refused('train', [ADE, '--work-dir', str(tmp_path), '--cfg-options',
                      'model.pretrained=x.pth', *data_root_options(ade_root)],
            "model.pretrained='x.pth' is mmseg's older way")


def test_a_coco_file_without_categories_is_named(tmp_path):
    root = write_dataset(str(tmp_path / 'd'), num_train=4, num_val=2, size=(64, 64), seed=0,
                         views=('coco',))['coco']
    ann = os.path.join(root, 'annotations', 'instances_train2017.json')
    with open(ann) as f:
        data = json.load(f)
    del data['categories']
    with open(ann, 'w') as f:
        json.dump(data, f)
    os.remove(os.path.join(os.path.dirname(root), MANIFEST))   # edited: no longer generated
    refused('train', [COCO, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                      *data_root_options(root + '/'),
                      f'val_evaluator.ann_file={root}/annotations/instances_val2017.json'],
            f'{ann}: no categories section \\(a COCO annotation file has images, annotations, '
            'categories\\)')


@pytest.mark.slow   # bash launchers
def test_launcher_mistakes(tmp_path):
    assert 'CHECKPOINT is empty' in one_error_line(['bash', 'tools/dist_test.sh', ADE, '', '2'])
    with socket.socket() as taken:
        taken.bind(('', 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(['bash', 'tools/dist_train.sh', ADE, '2'],
                              env={'PORT': str(port)})
    assert line.startswith(f'error: PORT {port} is taken on this machine')


@pytest.mark.slow   # torchrun with two ranks
def test_a_mistake_every_rank_refuses_ends_the_launch_in_one_line(tmp_path):
    # each rank prints its own error: line; torchrun used to add its failure table and the
    # launcher's traceback (ChildFailedError) and exit 1
    missing = tmp_path / 'no_data'
    line = one_error_line(['bash', 'tools/dist_train.sh', ADE, '2', '--work-dir',
                           str(tmp_path / 'w'), '--cfg-options', *data_root_options(str(missing))],
                          env={'PORT': str(free_port())})
    assert line.startswith('error: rank ') and 'exited with status 2' in line
