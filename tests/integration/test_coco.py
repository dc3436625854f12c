"""COCO transfer end to end on generated data (CPU): both protocols, metrics, checkpoints."""
import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mixedae.datasets import checks
from mixedae.datasets.synthetic import write_dataset
from mixedae.models.backbones.checkpoint_layouts import convert_checkpoint
from support import ROOT, data_root_options, free_port, run_in_repo

PY = sys.executable
TINY = {
    'fpn': os.path.join(ROOT, 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py'),
    'vitdet': os.path.join(ROOT, 'configs/coco/vitdet_mask-rcnn_vit-tiny-p8_1xb2-20iter_coco-synthetic-64.py'),
}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('data')), num_train=8, num_val=4,
                         size=(64, 80), seed=0, views=('coco',))['coco'] + '/'


def data_opts(root):
    return data_root_options(root) + [
            f'val_evaluator.ann_file={root}annotations/instances_val2017.json',
            f'test_evaluator.ann_file={root}annotations/instances_val2017.json']


def test_coco_view_agrees_with_segmentation_view(tmp_path):
    import cv2
    views = write_dataset(str(tmp_path), 3, 1, (48, 56), seed=7)
    coco, ade = views['coco'], views['ade20k']
    assert sorted(os.listdir(views['pretrain'])) == [f'{i:08d}.jpg' for i in range(3)]
    data = json.load(open(os.path.join(coco, 'annotations/instances_train2017.json')))
    for img in data['images']:
        label = cv2.imread(os.path.join(ade, 'annotations/training',
                                        f'ADE_train_{img["id"] - 1:08d}.png'),
                           cv2.IMREAD_UNCHANGED)
        anns = [a for a in data['annotations'] if a['image_id'] == img['id']]
        for cat in range(1, 6):
            union = np.zeros((48, 56), bool)
            for a in anns:
                if a['category_id'] == cat:
                    m = mask_utils.decode(mask_utils.merge(
                        mask_utils.frPyObjects(a['segmentation'], 48, 56))).astype(bool)
                    assert m.sum() == a['area']
                    ys, xs = np.nonzero(m)
                    assert a['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                         ys.max() - ys.min() + 1]
                    union |= m
            np.testing.assert_array_equal(union, label == cat)


def test_check_dataset_coco(coco_root, tmp_path):
    assert checks.check_coco(coco_root) == []
    bad = write_dataset(str(tmp_path / 'bad'), 2, 1, (32, 32), seed=3, views=('coco',))['coco']
    ann_file = os.path.join(bad, 'annotations/instances_train2017.json')
    data = json.load(open(ann_file))
    data['annotations'][0]['category_id'] = 99
    data['annotations'][1]['segmentation'] = [[1.0, 2.0, 3.0]]
    json.dump(data, open(ann_file, 'w'))
    os.remove(os.path.join(bad, 'val2017', '000000000001.jpg'))
    text = '\n'.join(checks.check_coco(bad))
    assert f'annotation {data["annotations"][0]["id"]}: unknown category_id 99' in text
    assert f'annotation {data["annotations"][1]["id"]}: a polygon needs' in text
    assert '000000000001.jpg: image 1 listed in' in text
    (tmp_path / 'broken' / 'annotations').mkdir(parents=True)
    (tmp_path / 'broken' / 'annotations' / 'instances_train2017.json').write_text('{oops')
    assert 'cannot read' in '\n'.join(checks.check_coco(str(tmp_path / 'broken')))


@pytest.mark.parametrize('protocol', ['fpn', 'vitdet'])
def test_ground_truth_as_predictions_gives_ap_100(coco_root, protocol):
    """Test samples go through the model's data preprocessor (which pads the batch); boxes are
    put in the network-input frame and brought back as mmdet's box head does (clip to
    ``img_shape``, divide by ``scale_factor``): padding must change neither."""
    from mmdet.registry import DATASETS, METRICS, MODELS
    from mmdet.structures.bbox import scale_boxes
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    import mixedae  # noqa: F401
    cfg = Config.fromfile(TINY[protocol])
    cfg.val_dataloader.dataset.data_root = coco_root
    cfg.val_evaluator.ann_file = coco_root + 'annotations/instances_val2017.json'
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
        metric = METRICS.build(cfg.val_evaluator)
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        raw = dataset[i]['data_samples']
        sample = preprocessor(pseudo_collate([dataset[i]]), False)['data_samples'][0]
        assert sample.img_shape == raw.img_shape and sample.scale_factor == raw.scale_factor
        gt = sample.gt_instances
        h, w = sample.ori_shape
        masks = gt.masks.to_ndarray() if not isinstance(gt.masks, np.ndarray) else gt.masks
        gt_boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
        boxes = scale_boxes(gt_boxes.clone(), sample.scale_factor)      # input frame
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, sample.img_shape[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, sample.img_shape[0])
        boxes = scale_boxes(boxes, [1 / s for s in sample.scale_factor])
        torch.testing.assert_close(boxes, gt_boxes)
        pred = dict(img_id=sample.img_id, ori_shape=sample.ori_shape,
                    pred_instances=dict(bboxes=boxes, scores=torch.ones(len(gt.labels)),
                                        labels=gt.labels, masks=torch.from_numpy(masks).bool()))
        assert masks.shape[1:] == (h, w)
        metric.process({}, [pred])
    metrics = metric.compute_metrics(metric.results)
    assert metrics['bbox_mAP'] == pytest.approx(1.0)
    assert metrics['segm_mAP'] == pytest.approx(1.0)


def test_vitdet_test_images_reach_the_backbone_as_the_full_square_grid(tmp_path):
    """A 40 x 100 image is resized to 26 x 64 and padded to 64 x 64 (the tiny LSJ size; a
    multiple of 32 would give 32 x 64): the backbone sees the 8 x 8 training grid, img_shape
    stays 26 x 64, and the predictions are in the original image's frame."""
    from mmdet.registry import DATASETS, MODELS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    import mixedae  # noqa: F401
    cfg = Config.fromfile(TINY['vitdet'])
    views = write_dataset(str(tmp_path), 1, 1, size=(40, 100), seed=0, views=('coco',))
    cfg.val_dataloader.dataset.data_root = views['coco'] + '/'
    assert cfg.model.backbone.rel_pos_type == 'decomposed'
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
        model = MODELS.build(cfg.model).eval()
    data = dataset[0]
    assert data['data_samples'].ori_shape == (40, 100)
    assert data['data_samples'].img_shape == (26, 64)
    grids = []
    model.backbone.register_forward_hook(lambda m, i, o: grids.append(tuple(o[0].shape[-2:])))
    with torch.no_grad():
        result = model.test_step(pseudo_collate([data]))[0]
    assert grids == [(8, 8)]
    assert result.img_shape == (26, 64) and result.batch_input_shape == (64, 64)
    pred = result.pred_instances
    assert len(pred) > 0 and pred.masks.shape[1:] == (40, 100)
    assert pred.bboxes[:, [0, 2]].max() <= 100 and pred.bboxes[:, [1, 3]].max() <= 40


@pytest.mark.parametrize('name', sorted(n for n in os.listdir(os.path.join(ROOT, 'configs/coco'))
                                        if n.startswith('vitdet_')))
def test_every_vitdet_config_uses_decomposed_rel_pos_and_pads_test_batches(name):
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/coco', name))
    backbone = cfg.model.backbone
    assert backbone.use_rel_pos_bias and backbone.rel_pos_type == 'decomposed'
    side = 64 if 'synthetic-64' in name else 1024
    assert cfg.model.data_preprocessor.pad_size_divisor == side
    assert not any(t['type'] == 'Pad' for t in cfg.test_dataloader.dataset.pipeline)


def coco_metrics(preds: list, root: str) -> dict:
    """mmdet's CocoMetric (box and mask AP, rounded as logged) of dumped predictions."""
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=f'{root}annotations/instances_val2017.json',
                        metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=('disc', 'square', 'triangle', 'cross', 'bar'))
    for pred in preds:
        metric.process({}, [pred])
    return {f'coco/{k}': v for k, v in metric.compute_metrics(metric.results).items()}


@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['fpn', 'vitdet'])
def test_tiny_protocol_trains_and_reports_box_and_mask_ap(coco_root, tmp_path, protocol):
    work = tmp_path / 'work'
    out = run_in_repo([PY, 'tools/train.py', TINY[protocol], '--work-dir', str(work),
               '--cfg-options', *data_opts(coco_root), 'train_cfg.max_iters=10',
               'train_cfg.val_interval=10'])
    assert out.returncode == 0, out.stderr[-4000:]
    metrics_file = tmp_path / 'metrics.json'
    out = run_in_repo([PY, 'tools/test.py', TINY[protocol], str(work / 'iter_10.pth'),
               '--work-dir', str(work), '--out-metrics', str(metrics_file),
               '--out', str(tmp_path / 'pred.pkl'), '--cfg-options', *data_opts(coco_root)])
    assert out.returncode == 0, out.stderr[-4000:]
    metrics = json.loads(metrics_file.read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'} <= set(metrics)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    # --out: every validation image's boxes, scores, labels and RLE masks, from which the
    # logged AP is recomputed
    with open(tmp_path / 'pred.pkl', 'rb') as f:
        preds = pickle.load(f)
    with open(f'{coco_root}annotations/instances_val2017.json') as f:
        image_ids = sorted(img['id'] for img in json.load(f)['images'])
    assert sorted(p['img_id'] for p in preds) == image_ids and len(image_ids) == 4
    for pred in preds:
        inst = pred['pred_instances']
        assert 'gt_instances' not in pred
        assert inst['bboxes'].shape == (len(inst['scores']), 4) == (len(inst['masks']), 4)
        assert all(m['size'] == list(pred['ori_shape']) for m in inst['masks'])
    assert coco_metrics(preds, coco_root) == {k: pytest.approx(v, abs=1e-3)
                                              for k, v in metrics.items()}
    if protocol == 'fpn':
        # --show-dir: one drawn image per validation image; --tta: Mask R-CNN has none
        out = run_in_repo([PY, 'tools/test.py', TINY[protocol], str(work / 'iter_10.pth'),
                           '--work-dir', str(work), '--show-dir', str(tmp_path / 'show'),
                           '--cfg-options', *data_opts(coco_root)])
        assert out.returncode == 0, out.stderr[-4000:]
        assert len(list((tmp_path / 'show').rglob('*.png'))) == 4
        out = run_in_repo([PY, 'tools/test.py', TINY[protocol], str(work / 'iter_10.pth'),
                           '--tta', '--cfg-options', *data_opts(coco_root)])
        assert out.returncode == 2
        assert out.stderr == (f'error: {TINY[protocol]} defines no tta_model / tta_pipeline, '
                              'so --tta has nothing to apply: test without --tta, or add them '
                              'to the config (the ADE20K configs have them; mmdet has no '
                              'test-time augmentation for Mask R-CNN)\n')


@pytest.mark.slow
def test_dist_train_two_gloo_processes(coco_root, tmp_path):
    env = dict(os.environ, PORT=str(free_port()))
    out = run_in_repo(['bash', 'tools/dist_train.sh', TINY['fpn'], '2', '--work-dir', str(tmp_path),
               '--cfg-options', *data_opts(coco_root), 'train_cfg.max_iters=4',
               'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4'],
              env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / 'iter_4.pth').exists()


@pytest.mark.parametrize('protocol', ['fpn', 'vitdet'])
@pytest.mark.parametrize('layout', ['mixedae', 'mae', 'ibot'])
def test_pretrained_layouts_load_through_the_config_option(tmp_path, protocol, layout):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    from timm.models.vision_transformer import VisionTransformer
    src = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4,
                            num_classes=0)
    sd = src.state_dict()
    if layout == 'mixedae':
        ckpt = dict(state_dict={f'backbone.{k}': v for k, v in sd.items()})
    elif layout == 'mae':
        ckpt = dict(model={**sd, 'mask_token': torch.zeros(1, 1, 64)})
    else:
        ckpt = dict(teacher={f'backbone.{k}': v for k, v in sd.items()},
                    student={f'module.backbone.{k}': v for k, v in sd.items()})
    torch.save(ckpt, tmp_path / 'src.pth')
    convert_checkpoint(str(tmp_path / 'src.pth'), str(tmp_path / 'vit.pth'), layout)
    cfg = Config.fromfile(TINY[protocol])
    cfg.merge_from_dict({'model.backbone.init_cfg': dict(type='Pretrained',
                                                         checkpoint=str(tmp_path / 'vit.pth'))})
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance(f'coco_{protocol}_{layout}', log_file=str(log_file))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    torch.testing.assert_close(model.backbone.blocks[3].mlp.fc1.weight,
                               src.blocks[3].mlp.fc1.weight)
    log = log_file.read_text()
    rel_pos = 'relative_position_bias_table' if protocol == 'fpn' else 'rel_pos_h, '
    assert 'loaded' in log and rel_pos in log
    assert 'dropped the final norm' in log


@pytest.mark.parametrize('prefix', ['mask-rcnn_vit-b16-{}_fpn_8xb2-1x_coco',
                                    'mask-rcnn_vit-b16-{}_fpn_8xb2-3x_coco',
                                    'vitdet_mask-rcnn_vit-b16-{}_16xb4-100e_coco-lsj-1024'])
@pytest.mark.parametrize('method', ['mixedae', 'mae', 'ibot'])
def test_method_configs_differ_only_in_the_checkpoint(prefix, method):
    from mmengine.config import Config

    def load(name):
        d = Config.fromfile(os.path.join(ROOT, 'configs/coco', name + '.py')).to_dict()
        init = d['model']['backbone'].pop('init_cfg', None)
        return d, init
    base, base_init = load(prefix.format('scratch'))
    cfg, init = load(prefix.format(method))
    assert base_init is None and init['type'] == 'Pretrained' and method in init['checkpoint']
    assert cfg == base
