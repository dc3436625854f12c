"""What a new user meets first: class names of the synthetic ADE20K view, one-line config /
checkpoint mismatch errors, and the opt-in TensorBoard backend."""
import logging
import os
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import mixedae  # noqa: F401  (registration)
from mixedae.apis import hooks
from mixedae.apis.config import load_config
from mixedae.datasets.synthetic import SHAPE_CLASSES, write_dataset
from mixedae.models import ViT
from mixedae.utils.checkpoint import CheckpointError
from mixedae.utils.errors import InvalidInputError
from support import ROOT, TINY, load_tool

ADE_TINY = os.path.join(ROOT,
                        'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
ADE_B = os.path.join(ROOT, 'configs/ade20k/upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py')


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_synthetic_ade20k_classes_are_the_shapes(tmp_path):
    from mmseg.registry import DATASETS, METRICS
    root = write_dataset(str(tmp_path), num_train=2, num_val=8, size=(64, 64), seed=0,
                         views=('ade20k',))['ade20k']
    cfg = Config.fromfile(ADE_TINY)
    cfg.val_dataloader.dataset.data_root = root
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 5
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
        metric = METRICS.build(cfg.val_evaluator)
    assert dataset.metainfo['classes'] == tuple(name for name, _ in SHAPE_CLASSES)
    assert [tuple(c) for c in dataset.metainfo['palette']] == [c for _, c in SHAPE_CLASSES]
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):  # the ground truth as prediction
        sample = dataset[i]['data_samples']
        labels = sample.gt_sem_seg.data
        assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 4, 255}  # 0 = first shape
        pred = sample.to_dict()
        pred['pred_sem_seg'] = dict(data=labels)
        metric.process({}, [pred])
    records = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(records)
    try:
        metrics = metric.compute_metrics(metric.results)
    finally:
        logger.removeHandler(records)
    assert metrics['mIoU'] == pytest.approx(100.0)
    table = '\n'.join(records.lines)
    rows = re.findall(r'^\|\s+(\w+)\s+\|\s+([\d.]+)\s+\|', table, flags=re.M)
    # the per-class table names the shapes, and only them (no ADE20K names, no nan rows)
    assert rows == [(name, '100.0') for name, _ in SHAPE_CLASSES]
    assert 'wall' not in table and 'nan' not in table


def vit_checkpoint(tmp_path, **cfg):
    path = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=ViT(**cfg).state_dict()), path)
    return str(path)


def test_vit_b_config_with_a_tiny_checkpoint_gives_one_line(tmp_path):
    tiny = Config.fromfile(ADE_TINY).model.backbone
    path = vit_checkpoint(tmp_path, **{k: v for k, v in tiny.items() if k != 'type'})
    backbone = dict(Config.fromfile(ADE_B).model.backbone)
    backbone.pop('type')
    backbone['init_cfg'] = dict(type='Pretrained', checkpoint=path)
    model = ViT(**backbone)
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
    message = str(info.value)
    assert '\n' not in message and len(message) < 500
    assert message.startswith(f'{path} does not match the config: cls_token is (1, 1, 64) in '
                              'the checkpoint and (1, 1, 768) in the model')
    assert ('The checkpoint is a ViT with embed_dim 64, patch 8x8, depth 4, the config builds '
            'embed_dim 768, patch 16x16, depth 12') in message


def test_depth_mismatch_gives_one_line(tmp_path):
    path = vit_checkpoint(tmp_path, **TINY)
    model = ViT(**{**TINY, 'depth': 3}, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match=r'the checkpoint has 2 blocks, the model 3\. .*'
                                              r'depth 2, the config builds .*depth 3'):
        model.init_weights()
    ok = ViT(**TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    ok.init_weights()  # the matching config still loads


@pytest.mark.parametrize('config', [
    'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
    'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py'])
def test_tensorboard_backend_is_added_and_builds(config, tmp_path, monkeypatch):
    from mmengine.registry import VISUALIZERS
    # the package is optional (not installed here); MMEngine's backend imports it only when it
    # first writes, so the build below needs none
    monkeypatch.setattr(hooks.importlib.util, 'find_spec', lambda name: object())
    cfg = Config.fromfile(os.path.join(ROOT, config))
    before = [b['type'] for b in (cfg.get('visualizer') or {}).get('vis_backends', [])]
    hooks.add_vis_backend(cfg, 'tensorboard')
    hooks.add_vis_backend(cfg, 'tensorboard')  # twice: still one TensorBoard backend
    types = [b['type'] for b in cfg.visualizer.vis_backends]
    assert types == (before or ['LocalVisBackend']) + ['TensorboardVisBackend']
    vis_cfg = dict(cfg.visualizer, name=f'tb-{os.path.basename(config)}', save_dir=str(tmp_path))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mixedae')):
        visualizer = VISUALIZERS.build(vis_cfg)
    assert [type(b).__name__ for b in visualizer._vis_backends.values()] == types


@pytest.mark.parametrize('flag, backend, install', [
    ('wandb', 'WandbVisBackend', r'\.venv/bin/pip install wandb \(then wandb login\)'),
    ('mlflow', 'MLflowVisBackend', r'\.venv/bin/pip install mlflow')])
def test_wandb_and_mlflow_flags_add_mmengines_backends(monkeypatch, flag, backend, install):
    train = load_tool('train')
    args = train.parse_args([ADE_TINY, f'--{flag}'])
    assert args.vis_backends == [flag]
    with pytest.raises(InvalidInputError, match=f'--{flag} needs the {flag} package: {install}'):
        load_config(ADE_TINY, {}, 'none', None, vis_backends=args.vis_backends)
    monkeypatch.setattr(hooks.importlib.util, 'find_spec', lambda name: object())
    cfg = load_config(ADE_TINY, {}, 'none', None, vis_backends=args.vis_backends)
    assert cfg.visualizer.vis_backends[-1] == dict(type=backend)


def test_tensorboard_flag_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(hooks.importlib.util, 'find_spec', lambda name: None)
    # a UserInputError: one line and status 2 through the tools, not a traceback
    with pytest.raises(InvalidInputError, match=r"--tensorboard needs the tensorboard package: "
                                                r"\.venv/bin/pip install -e '\.\[tensorboard\]'"):
        load_config(ADE_TINY, {}, 'none', None, vis_backends=['tensorboard'])
