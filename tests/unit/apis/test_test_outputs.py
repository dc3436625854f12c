"""mixedae.apis.test_outputs: what tools/test.py's --tta, --out and --show-dir change in a
config, and the inputs they refuse. The runs they make are tested end to end in
tests/integration/test_ade20k.py and test_coco.py."""
import os

import pytest
from mmengine.config import Config

from mixedae.apis.test_outputs import dump_predictions, show_predictions, task_of, use_tta
from mixedae.utils.errors import InvalidInputError
from support import ROOT

ADE = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
COCO = os.path.join(ROOT, 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py')


def test_the_task_follows_the_default_scope():
    assert task_of(Config.fromfile(ADE), ADE) == 'seg'
    assert task_of(Config.fromfile(COCO), COCO) == 'det'
    with pytest.raises(InvalidInputError, match="x.py: default_scope is 'mmpretrain'"):
        task_of(Config(dict(default_scope='mmpretrain')), 'x.py')


def test_tta_wraps_the_model_and_swaps_the_test_pipeline():
    cfg = Config.fromfile(ADE)
    model, plain = cfg.model.to_dict(), cfg.test_dataloader.dataset.pipeline
    use_tta(cfg, ADE)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.to_dict() == model
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline != plain
    # validation during training keeps the plain pipeline
    assert cfg.val_dataloader.dataset.pipeline == plain


def test_tta_without_its_fields_names_the_config_and_what_is_missing():
    with pytest.raises(InvalidInputError) as err:
        use_tta(Config.fromfile(COCO), COCO)
    assert str(err.value).startswith(f'{COCO} defines no tta_model / tta_pipeline, so --tta')
    cfg = Config.fromfile(ADE)
    cfg.tta_pipeline = None
    with pytest.raises(InvalidInputError, match=' defines no tta_pipeline, so'):
        use_tta(cfg, ADE)


def test_seg_predictions_go_to_a_new_or_empty_folder(tmp_path):
    cfg = Config.fromfile(ADE)
    dump_predictions(cfg, str(tmp_path / 'pred'), 'seg')
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'],
                                      output_dir=str(tmp_path / 'pred'))
    assert 'output_dir' not in cfg.val_evaluator    # validation writes nothing
    (tmp_path / 'pred').mkdir()
    dump_predictions(Config.fromfile(ADE), str(tmp_path / 'pred'), 'seg')    # empty: accepted
    (tmp_path / 'pred' / 'a.png').write_bytes(b'x')
    with pytest.raises(InvalidInputError, match='already exists and is not an empty folder'):
        dump_predictions(Config.fromfile(ADE), str(tmp_path / 'pred'), 'seg')
    assert (tmp_path / 'pred' / 'a.png').read_bytes() == b'x'


def test_det_predictions_go_to_a_new_pickle(tmp_path):
    cfg = Config.fromfile(COCO)
    metric = cfg.test_evaluator.to_dict()
    out = str(tmp_path / 'pred.pkl')
    dump_predictions(cfg, out, 'det')
    assert cfg.test_evaluator == [metric, dict(type='DumpDetResults', out_file_path=out)]
    with pytest.raises(InvalidInputError, match=r'--out .*pred\.json: .* ending in \.pkl'):
        dump_predictions(Config.fromfile(COCO), str(tmp_path / 'pred.json'), 'det')
    (tmp_path / 'pred.pkl').write_bytes(b'old')
    with pytest.raises(InvalidInputError, match='pred.pkl: already exists and is not written'):
        dump_predictions(Config.fromfile(COCO), out, 'det')
    assert (tmp_path / 'pred.pkl').read_bytes() == b'old'


@pytest.mark.parametrize('path, task', [(ADE, 'seg'), (COCO, 'det')])
def test_show_dir_draws_every_test_image(path, task, tmp_path):
    cfg = Config.fromfile(path)
    show_predictions(cfg, str(tmp_path), path, task)
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.interval == 1
    assert cfg.visualizer.save_dir == str(tmp_path)
    del cfg.default_hooks['visualization']
    hook = 'SegVisualizationHook' if task == 'seg' else 'DetVisualizationHook'
    with pytest.raises(InvalidInputError, match=f"needs default_hooks.visualization .*'{hook}'"):
        show_predictions(cfg, str(tmp_path), path, task)
