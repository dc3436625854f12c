"""Pretraining data: image folder / list, MAE pipeline, config consistency (whole groups per
batch: ``MixingBatchCheckHook`` with mmengine's ``DefaultSampler``)."""
import glob
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import mixedae  # noqa: F401
from mixedae.datasets import ImageFolder, RandomResizedCrop
from support import ROOT

PIPELINE = [
    dict(type='LoadRGBImage'),
    dict(type='RandomResizedCrop', size=32, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackImageInputs'),
]


@pytest.fixture(autouse=True)
def mixedae_scope():
    """Build registry types in the mixedae scope, as the Runner does for pretraining configs."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mixedae'):
        yield


@pytest.fixture
def image_tree(tmp_path):
    """ImageNet-like layout: two class folders with a few images of different sizes."""
    rng = np.random.default_rng(0)
    for cls, n in (('n001', 3), ('n002', 2)):
        os.makedirs(tmp_path / 'train' / cls)
        for i in range(n):
            arr = (rng.random((40 + 8 * i, 56, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / 'train' / cls / f'{i}.png')
    (tmp_path / 'train' / 'n001' / 'notes.txt').write_text('not an image')
    return tmp_path


def test_folder_scan_and_pipeline(image_tree):
    ds = ImageFolder(data_root=str(image_tree), data_prefix=dict(img_path='train'),
                     pipeline=PIPELINE)
    assert len(ds) == 5
    assert ds.get_data_info(0)['img_path'].endswith(os.path.join('n001', '0.png'))
    item = ds[3]
    assert set(item) == {'inputs'}
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.uint8


def test_list_file(image_tree):
    (image_tree / 'train.txt').write_text('n002/1.png 1\n\nn001/0.png 0\n')
    ds = ImageFolder(data_root=str(image_tree), ann_file='train.txt',
                     data_prefix=dict(img_path='train'))
    assert [os.path.relpath(d['img_path'], image_tree / 'train') for d in ds.load_data_list()] \
        == [os.path.join('n002', '1.png'), os.path.join('n001', '0.png')]
    (image_tree / 'bad.txt').write_text('n001/0.png\nn009/7.png\n')
    with pytest.raises(FileNotFoundError, match=r'bad.txt:2: image not found'):
        ImageFolder(data_root=str(image_tree), ann_file='bad.txt',
                    data_prefix=dict(img_path='train'))


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        ImageFolder(data_root=str(tmp_path), data_prefix=dict(img_path='nope'))
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match='no images'):
        ImageFolder(data_root=str(tmp_path), data_prefix=dict(img_path='empty'))


def test_corrupt_image_error_names_the_file(image_tree):
    bad = image_tree / 'train' / 'n002' / 'broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    ds = ImageFolder(data_root=str(image_tree), data_prefix=dict(img_path='train'),
                     pipeline=PIPELINE)
    index = [d['img_path'] for d in ds.load_data_list()].index(str(bad))
    with pytest.raises(OSError, match='broken.png'):
        ds.prepare_data(index)


def test_random_resized_crop_box_obeys_scale_and_ratio():
    crop = RandomResizedCrop(16, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    for _ in range(200):
        top, left, h, w = crop.crop_box(100, 120)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert 0.2 * 12000 * 0.9 <= h * w <= 12000
    with pytest.raises(ValueError, match='interpolation'):
        RandomResizedCrop(16, interpolation='lanczos9')


PRETRAIN_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs/pretrain/*.py'))
                          + glob.glob(os.path.join(ROOT, 'configs/pretrain/ablations/*.py')))


@pytest.mark.parametrize('path', PRETRAIN_CONFIGS, ids=os.path.basename)
def test_pretrain_configs_are_consistent(path):
    cfg = Config.fromfile(path)
    g = cfg.model.backbone.group_size
    batch = cfg.train_dataloader.batch_size
    assert batch % g == 0 and cfg.train_dataloader.drop_last
    assert 'group_size' not in cfg.train_dataloader.sampler and 'batch_size' not in cfg.model
    assert dict(type='mixedae.MixingBatchCheckHook') in cfg.custom_hooks
    assert cfg.auto_scale_lr.base_batch_size > 0
    size = cfg.model.backbone.img_size
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomResizedCrop']
    assert crop[0].size == size
    assert (size // cfg.model.backbone.patch_size) ** 2 % g == 0


def test_every_pretrain_config_builds_its_model():
    from mixedae.registry import MODELS
    small = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    for path in PRETRAIN_CONFIGS:
        cfg = Config.fromfile(path)
        cfg.model.backbone.update(small)
        if cfg.model.backbone.group_size == 3:
            cfg.model.backbone.img_size = 48       # 36 patches, divisible by 3
        cfg.model.decoder.update(decoder_embed_dim=16, depth=1, num_heads=2)
        cfg.model.backbone.topk = None
        model = MODELS.build(cfg.model)
        size = cfg.model.backbone.img_size
        losses = model.loss(torch.randn(cfg.model.backbone.group_size * 2, 3, size, size))
        assert torch.isfinite(losses['loss_rec']), path
