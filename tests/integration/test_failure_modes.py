"""Runs that fail loudly and lose nothing (in-process, fast): the non-finite guard, strict
checkpoint loading, label and size checks, data errors naming their files, fail-fast input
checks and crash-safe writes. The command-line reproductions are in test_failure_modes_cli.py.
"""
import itertools
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mixedae  # noqa: F401  (registration)
from mixedae.datasets.checks import bad_label_values, check_ade20k
from mixedae.datasets.synthetic import write_dataset
from mixedae.datasets.validation import CheckSegAnnotation, DataError
from mixedae.engine.hooks import NonFiniteError
from mixedae.utils.key_report import describe_keys, key_coverage
from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, non_finite_tensors
from mixedae.utils.io import atomic_write, write_metrics
from mixedae.utils.launch import check_inputs_exist, missing_inputs
from support import ROOT

ADE_TINY = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
COCO_TINY = os.path.join(ROOT, 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py')


# ---------------------------------------------------------------- non-finite guard (toy runs)

class Steps(Dataset):
    """Item i: an input and whether its step's extra loss term is NaN."""

    def __init__(self, n, bad=(), nan_input=()):
        self.n, self.bad, self.nan_input = n, set(bad), set(nan_input)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = torch.full((4,), float('nan')) if i in self.nan_input else torch.ones(4) * (i + 1)
        return dict(x=x, bad=torch.tensor(float(i in self.bad)))


class Toy(BaseModel):
    """``loss_main`` trains the weights; ``loss_aux`` (no gradient) is NaN on ``bad`` steps,
    i.e. a non-finite loss whose update is harmless, like a step skipped by loss scaling."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x, bad, mode='loss'):
        aux = torch.where(bad > 0, torch.tensor(float('nan')), torch.tensor(0.0)).mean()
        return dict(loss_main=self.fc(x).pow(2).mean() * 1e-3, loss_aux=aux)


_RUNS = itertools.count()


def unique_name():
    """An experiment name of its own, so that no two runners share a logger (and log file)."""
    return f'run{next(_RUNS)}'


def toy_runner(work_dir, data, max_iters, max_bad_steps=0, clip=False, resume=False,
               load_from=None, keep=1):
    torch.manual_seed(0)
    optim = dict(optimizer=dict(type='SGD', lr=1e-3))
    if clip:
        optim['clip_grad'] = dict(max_norm=1e6)
    return Runner(
        model=Toy(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=data, batch_size=1, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=optim, train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False,
                                           max_keep_ckpts=keep),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='mixedae.NonFiniteGuardHook', max_bad_steps=max_bad_steps)],
        resume=resume, load_from=load_from, default_scope='mixedae',
        experiment_name=unique_name())


def ckpts(work_dir):
    return sorted(p for p in os.listdir(work_dir) if p.endswith('.pth'))


def test_nan_loss_stops_at_its_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    runner = toy_runner(tmp_path, Steps(8, bad={4}), max_iters=8)   # iteration 5 is bad
    with pytest.raises(NonFiniteError) as err:
        runner.train()
    message = str(err.value)
    assert 'iteration 5' in message and 'loss_aux=nan' in message
    assert f'Last good checkpoint: {tmp_path / "iter_4.pth"}' in message
    assert ckpts(tmp_path) == ['iter_4.pth']        # max_keep_ckpts=1 kept the last good one
    assert not non_finite_tensors(load_checkpoint_file(tmp_path / 'iter_4.pth'))
    log = next(tmp_path.rglob('*.log')).read_text()
    assert 'iteration 5' in log and 'Last good checkpoint' in log     # in the work-dir log too


def test_non_finite_weights_stop_the_run_even_with_a_finite_loss(tmp_path):
    # a NaN input makes the gradient, hence the weights, NaN; the loss of that step is NaN too,
    # but tolerating bad loss steps must never let NaN weights through
    runner = toy_runner(tmp_path, Steps(8, nan_input={2}), max_iters=8, max_bad_steps=5)
    with pytest.raises(NonFiniteError, match=r'non-finite weights after iteration 3.*fc\.'):
        runner.train()
    assert ckpts(tmp_path) == ['iter_2.pth']


def test_bad_steps_within_tolerance_are_skipped_and_counted_in_a_row(tmp_path):
    toy_runner(tmp_path / 'ok', Steps(8, bad={2, 3, 5, 6}), max_iters=8, max_bad_steps=2).train()
    assert ckpts(tmp_path / 'ok') == ['iter_8.pth']
    runner = toy_runner(tmp_path / 'stop', Steps(8, bad={2, 3, 4}), max_iters=8,
                        max_bad_steps=2)
    with pytest.raises(NonFiniteError, match=r'iteration 5 .*3 bad step\(s\) in a row'):
        runner.train()


def test_grad_norm_is_checked_when_clipping(tmp_path):
    runner = toy_runner(tmp_path, Steps(4, nan_input={1}), max_iters=4, clip=True)
    with pytest.raises(NonFiniteError, match=r'iteration 2 .*grad_norm=nan'):
        runner.train()


def test_checkpoint_with_non_finite_weights_is_never_saved(tmp_path):
    runner = toy_runner(tmp_path, Steps(4), max_iters=2)
    runner.train()
    with torch.no_grad():
        runner.model.fc.weight[0, 0] = float('inf')
    with pytest.raises(NonFiniteError, match=r'refusing to save .*state_dict\.fc\.weight'):
        runner.save_checkpoint(str(tmp_path), 'bad.pth')
    assert not (tmp_path / 'bad.pth').exists()


def test_resume_from_a_non_finite_checkpoint_is_refused_by_name(tmp_path):
    toy_runner(tmp_path, Steps(4), max_iters=2).train()
    ckpt = load_checkpoint_file(tmp_path / 'iter_2.pth')
    ckpt['state_dict']['fc.bias'][0] = float('nan')
    torch.save(ckpt, tmp_path / 'nan.pth')
    runner = toy_runner(tmp_path, Steps(4), max_iters=4, resume=True,
                        load_from=str(tmp_path / 'nan.pth'))
    with pytest.raises(CheckpointError,
                       match=r'nan\.pth: 1 non-finite tensor.*state_dict\.fc\.bias'):
        runner.train()


def test_guard_rejects_a_bad_tolerance():
    from mixedae.engine.hooks import NonFiniteGuardHook
    with pytest.raises(ValueError, match='max_bad_steps'):
        NonFiniteGuardHook(max_bad_steps=-1)


def test_non_finite_tensors_names_nested_entries():
    obj = dict(state_dict=dict(a=torch.ones(2), b=torch.tensor([1.0, float('nan')])),
               optimizer=dict(state={0: dict(exp_avg=torch.tensor([float('-inf')]))}),
               steps=torch.tensor([3]))                     # integer tensors are never bad
    assert non_finite_tensors(obj) == ['state_dict.b', 'optimizer.state.0.exp_avg']


@pytest.mark.parametrize('path', [
    'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    'configs/pretrain/mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py',
    'configs/ade20k/upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py',
    'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
    'configs/coco/mask-rcnn_vit-b16-mixedae_fpn_8xb2-1x_coco.py',
    'configs/coco/vitdet_mask-rcnn_vit-b16-mixedae_16xb4-100e_coco-lsj-1024.py',
    'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py',
    'configs/coco/vitdet_mask-rcnn_vit-tiny-p8_1xb2-20iter_coco-synthetic-64.py',
])
def test_every_kind_of_config_has_the_guard_and_checked_datasets(path):
    cfg = Config.fromfile(os.path.join(ROOT, path))
    assert dict(type='mixedae.NonFiniteGuardHook') in cfg.custom_hooks
    if '/ade20k/' in path:
        for loader in ('train_dataloader', 'test_dataloader'):
            dataset = cfg[loader].dataset
            assert dataset.type in ('mixedae.ADE20KDataset', 'mixedae.BaseSegDataset')
            types = [t['type'] for t in dataset.pipeline]
            assert types[types.index('LoadAnnotations') + 1] == 'mixedae.CheckSegAnnotation'
    if '/coco/' in path:
        assert {cfg[k].dataset.type for k in ('train_dataloader', 'val_dataloader',
                                              'test_dataloader')} == {'mixedae.CocoDataset'}


# ---------------------------------------------------------------- strict checkpoint loading

def test_key_coverage_and_description():
    missing, unexpected = key_coverage(['a', 'b', 'c'], ['module.a', 'x'])
    assert (missing, unexpected) == (['b', 'c'], ['x'])
    assert describe_keys([f'k{i}' for i in range(7)], first=3) == '7: k0, k1, k2, ...'
    assert describe_keys([]) == '0'


def strict_runner(work_dir, load_from, allow_partial):
    return Runner(
        model=Toy(), work_dir=str(work_dir), load_from=load_from, default_scope='mixedae',
        experiment_name=unique_name(),
        custom_hooks=[dict(type='mixedae.StrictLoadHook', allow_partial=allow_partial)])


def test_checkpoint_not_covering_the_model_is_refused_with_its_keys(tmp_path):
    torch.save(dict(state_dict={'fc.weight': torch.zeros(1, 4), 'decoder.w': torch.zeros(1)}),
               tmp_path / 'other.pth')
    runner = strict_runner(tmp_path / 'work', str(tmp_path / 'other.pth'), False)
    with pytest.raises(CheckpointError) as err:
        runner.load_or_resume()
    text = str(err.value)
    assert 'other.pth does not cover the model' in text
    assert 'missing keys 1: fc.bias' in text and 'unexpected keys 1: decoder.w' in text
    assert 'does not cover the model' in next((tmp_path / 'work').rglob('*.log')).read_text()
    # --allow-partial: loaded, with the same report as a warning
    runner = strict_runner(tmp_path / 'partial', str(tmp_path / 'other.pth'), True)
    runner.load_or_resume()
    assert runner.model.fc.weight.abs().sum() == 0
    assert '--allow-partial' in next((tmp_path / 'partial').rglob('*.log')).read_text()


# ---------------------------------------------------------------- labels and sizes

def results(label, shape=(48, 64), reduce_zero_label=True):
    return dict(gt_seg_map=label, seg_map_path='ann/x.png', img_path='img/x.jpg',
                ori_shape=shape, reduce_zero_label=reduce_zero_label)


def test_label_check_accepts_classes_and_ignore_index_only():
    check = CheckSegAnnotation(num_classes=150)
    label = np.zeros((48, 64), np.uint8)
    label[:5], label[5:10] = 149, 255
    assert check(results(label)) is not None
    label[0, :3] = [150, 199, 199]
    with pytest.raises(DataError, match=r'ann/x\.png: label values \[150, 199\] .*0-149 .*'
                                        r'values in the file: \[151, 200\]'):
        check(results(label))
    assert bad_label_values(np.array([[-1, 0, 3, 255]]), 3, (255,)) == [-1, 3]
    with pytest.raises(ValueError, match='num_classes'):
        CheckSegAnnotation(num_classes=0)


def test_label_map_of_another_size_names_both_files():
    with pytest.raises(DataError, match=r'ann/x\.png: annotation size \(40, 64\).*'
                                        r'img/x\.jpg of size \(48, 64\)'):
        CheckSegAnnotation(num_classes=150)(results(np.zeros((40, 64), np.uint8)))


def build_ade(root, loader):
    cfg = Config.fromfile(ADE_TINY)
    cfg[loader].dataset.data_root = root
    from mmseg.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg[loader].dataset)


@pytest.mark.parametrize('loader,split,stem', [('train_dataloader', 'training', 'ADE_train'),
                                               ('test_dataloader', 'validation', 'ADE_valid')])
def test_bad_ade_annotations_fail_where_read_in_train_and_test(ade_root, tmp_path, loader,
                                                               split, stem):
    root = tmp_path / 'ade'
    write_dataset(str(tmp_path), num_train=4, num_val=2, size=(48, 64), seed=0,
                  views=('ade20k',))
    build_ade(str(root), loader)[1]                                   # clean: loads
    ann = root / 'annotations' / split
    cv2.imwrite(str(ann / f'{stem}_00000001.png'), np.full((48, 64), 200, np.uint8))
    cv2.imwrite(str(ann / f'{stem}_00000000.png'), np.zeros((40, 64), np.uint8))
    dataset = build_ade(str(root), loader)
    with pytest.raises(DataError, match=rf'{stem}_00000001\.png: label values \[199\].*\[200\]'):
        dataset[1]
    with pytest.raises(DataError, match=rf'{stem}_00000000\.png: annotation size \(40, 64\).*'
                                        rf'{stem}_00000000\.jpg of size \(48, 64\)'):
        dataset[0]


def test_any_sample_error_is_reraised_with_its_paths(tmp_path):
    root = tmp_path / 'ade'
    write_dataset(str(tmp_path), num_train=2, num_val=1, size=(32, 32), seed=0,
                  views=('ade20k',))
    (root / 'images/training/ADE_train_00000001.jpg').write_bytes(b'')   # zero-byte image
    dataset = build_ade(str(root), 'train_dataloader')
    with pytest.raises(DataError, match=r'sample 1 \(img_path=.*ADE_train_00000001\.jpg, '
                                        r'seg_map_path=.*ADE_train_00000001\.png\)') as err:
        dataset[1]
    assert err.value.__cause__ is not None                # the original error is chained


def build_coco(root):
    cfg = Config.fromfile(COCO_TINY)
    cfg.train_dataloader.dataset.data_root = root
    from mmdet.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(cfg.train_dataloader.dataset)


def test_coco_json_and_category_errors_name_the_file(tmp_path):
    root = write_dataset(str(tmp_path), 3, 1, (32, 32), seed=3, views=('coco',))['coco'] + '/'
    ann_file = os.path.join(root, 'annotations/instances_train2017.json')
    assert len(build_coco(root)) > 0
    data = json.load(open(ann_file))
    data['annotations'][1]['category_id'] = 99
    json.dump(data, open(ann_file, 'w'))
    with pytest.raises(DataError, match=rf'instances_train2017\.json: annotation '
                                        rf'{data["annotations"][1]["id"]} .*category_id 99'):
        build_coco(root)
    text = open(ann_file).read()
    open(ann_file, 'w').write(text[:len(text) // 2])             # truncated
    with pytest.raises(DataError, match=r'instances_train2017\.json: not valid JSON'):
        build_coco(root)


def test_check_dataset_functions_live_in_the_package(ade_root, tmp_path):
    assert check_ade20k(ade_root) == []
    write_dataset(str(tmp_path), 2, 1, (32, 32), seed=1, views=('ade20k',))
    cv2.imwrite(str(tmp_path / 'ade/annotations/training/ADE_train_00000000.png'),
                np.full((32, 32), 151, np.uint8))
    assert check_ade20k(str(tmp_path / 'ade')) == [
        f'{tmp_path}/ade/annotations/training/ADE_train_00000000.png: label values [151] '
        'outside 0-150']


# ---------------------------------------------------------------- fail fast

def test_every_missing_input_is_listed_at_once(tmp_path, ade_root):
    cfg = Config.fromfile(ADE_TINY)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = ade_root
    assert missing_inputs(cfg, 'train') == missing_inputs(cfg, 'test') == []
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    cfg.val_dataloader.dataset.data_prefix.seg_map_path = 'annotations/typo'
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth'))
    cfg.load_from = str(tmp_path / 'run.pth')
    assert missing_inputs(cfg, 'train') == [
        f"model.backbone.init_cfg.checkpoint: checkpoint file not found: '{tmp_path}/vit.pth'",
        f"train_dataloader.dataset.data_root: folder not found: '{tmp_path}/nowhere'",
        f"val_dataloader.dataset.data_prefix.seg_map_path: folder not found: "
        f"'{ade_root}/annotations/typo'",
        f"load_from: checkpoint file not found: '{tmp_path}/run.pth'"]
    with pytest.raises(FileNotFoundError, match=r'4 input\(s\) named in the config are missing'):
        check_inputs_exist(cfg, 'train')
    cfg.resume = True                       # resuming: load_from is the run's own file
    assert not any(p.startswith('load_from') for p in missing_inputs(cfg, 'train'))


def test_coco_annotation_files_and_evaluator_are_checked(tmp_path):
    cfg = Config.fromfile(COCO_TINY)
    cfg.test_dataloader.dataset.data_root = str(tmp_path) + '/'
    cfg.test_evaluator.ann_file = str(tmp_path / 'val.json')
    assert missing_inputs(cfg, 'test') == [
        f"test_dataloader.dataset.ann_file: file not found: "
        f"'{tmp_path}/annotations/instances_val2017.json'",
        f"test_dataloader.dataset.data_prefix.img: folder not found: '{tmp_path}/val2017/'",
        f"test_evaluator.ann_file: file not found: '{tmp_path}/val.json'"]


# ---------------------------------------------------------------- crash-safe writes

def test_atomic_write_replaces_only_complete_files(tmp_path):
    target = tmp_path / 'out.json'
    target.write_text('old')
    with pytest.raises(RuntimeError, match='stop'):
        with atomic_write(target) as f:
            f.write('half')
            raise RuntimeError('stop')
    assert target.read_text() == 'old' and os.listdir(tmp_path) == ['out.json']
    write_metrics({'mIoU': torch.tensor(41.5), 'aAcc': np.float32(80.0), 'n': 'x'}, target)
    assert json.loads(target.read_text()) == {'mIoU': 41.5, 'aAcc': 80.0, 'n': 'x'}
    assert os.listdir(tmp_path) == ['out.json']
    with pytest.raises(ValueError, match='mode'):
        with atomic_write(target, 'a'):
            pass
