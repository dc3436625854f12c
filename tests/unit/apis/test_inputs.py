"""mixedae.apis.inputs: every input a run reads is checked before the model is built, all
missing ones listed at once by config key, and generated data that no longer matches its
manifest refused with the command that writes it again."""
import os

import pytest
from mmengine.config import Config

from mixedae.apis.inputs import check_inputs_exist, missing_inputs
from mixedae.datasets.synthetic import write_dataset
from support import ROOT, data_root_options

ADE_TINY = os.path.join(ROOT,
                        'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
COCO_TINY = os.path.join(ROOT,
                         'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py')


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


def test_train_refuses_data_that_no_longer_matches_its_manifest(tmp_path):
    root = str(tmp_path / 'syn')
    write_dataset(root, 3, 2, (32, 32), seed=1, views=('ade20k',))
    cfg = Config.fromfile(ADE_TINY)
    cfg.merge_from_dict(dict(o.split('=') for o in data_root_options(os.path.join(root, 'ade'))))
    check_inputs_exist(cfg, 'train')                        # matches: no error
    (tmp_path / 'syn' / 'ade' / 'images' / 'validation' / 'extra.jpg').write_bytes(b'')
    with pytest.raises(ValueError) as err:
        check_inputs_exist(cfg, 'train')
    message = str(err.value)
    assert f'{root} no longer matches its manifest.json' in message
    assert 'ade/images/validation: 3 files, its manifest.json lists 2' in message
    assert message.endswith(f"regenerate it: mixedae.datasets.synthetic.write_dataset({root!r}, "
                            "3, 2, (32, 32), 1, ('ade20k',), replace=True, family=4)")
    write_dataset(root, 3, 2, (32, 32), seed=1, replace=True)     # all views, square
    (tmp_path / 'syn' / 'pretrain' / '00000000.jpg').unlink()
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': os.path.join(root, 'ade')})
    with pytest.raises(ValueError, match='regenerate it: .venv/bin/python tools/make_synthetic_data.py '
                       f'{root} --replace --num-train 3 --num-val 2 --size 32 --seed 1 --family 4'):
        check_inputs_exist(cfg, 'train')
