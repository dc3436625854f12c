"""mixedae's torchvision-backed mmcv ops equal mmcv's compiled ones (CPU), op by op and through
whole tiny Mask R-CNN, ViTDet and UperNet train steps and predictions.

Needs mmcv with compiled ops (`make test-parity` builds that environment); `make test`
deselects the ``parity`` marker, and run without compiled mmcv these tests fail.

"Equal" means bit-identical, NMS order included: the provider visits boxes in the order of
the same ``scores.sort(descending=True)`` call mmcv's kernel makes, so boxes with equal scores
come out in mmcv's order, not merely as the same set.
"""
import copy
import importlib
import os
from collections import Counter

import mmcv.ops
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from support import ROOT
from ext_switch import serving
from mixedae.datasets.synthetic import write_dataset
from mixedae.engine.optimizers.amp_optim_wrapper import configure_amp
from mixedae.utils import mmcv_ops

pytestmark = pytest.mark.parity


@pytest.fixture(scope='module')
def exts():
    """(mmcv's compiled extension, the provider)."""
    assert mmcv_ops.compiled_mmcv_ops(), 'needs mmcv with compiled ops: make test-parity'
    return importlib.import_module('mmcv._ext'), mmcv_ops.build_ext()


def on_both(exts, fn):
    """``fn()`` run with mmcv's ops served by the compiled extension, then by the provider."""
    results = []
    for ext in exts:
        with serving(ext):
            results.append(fn())
    return results


def assert_same(a, b):
    """Nested tuples/lists/dicts of tensors and numbers equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


# ----------------------------------------------------------------------------- RoIAlign

def rois_for(scale: float, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """RoIs in image coordinates: random ones, ones on the borders, ones beyond them, tiny
    and empty ones, over two images."""
    h, w = height / scale, width / scale
    xy = torch.rand(24, 2, generator=g) * torch.tensor([w, h]) * 0.8
    wh = torch.rand(24, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 0.1
    random = torch.cat([xy, xy + wh], 1)
    special = torch.tensor([[0, 0, w, h], [0, 0, w / 2, h / 3], [w / 2, h / 2, w, h],
                            [-w / 4, -h / 4, w / 3, h / 3], [w * 0.7, h * 0.6, w * 1.3, h * 1.2],
                            [-w, -h, -w / 2, -h / 2], [w * 1.1, 0, w * 1.5, h],
                            [3.0, 4.0, 3.0, 4.0], [5.0, 5.0, 5.2, 5.1]])
    boxes = torch.cat([random, special])
    batch = torch.arange(len(boxes)) % 2
    return torch.cat([batch[:, None].float(), boxes], 1)


def roi_align_run(feats, rois, scale, sampling_ratio, aligned, dtype):
    """Output and input gradient of ``mmcv.ops.roi_align`` as the models call it; 'bf16'
    is a bf16 network under bf16 autocast whose features are cast to fp32 at the call
    (``mixedae.models.detection.AmpSingleRoIExtractor``)."""
    x = feats.detach().clone().requires_grad_(True)
    if dtype == 'bf16':
        with torch.autocast('cpu', dtype=torch.bfloat16):
            inner = (x.bfloat16() * 1.5).float()
            out = mmcv.ops.roi_align(inner, rois, (7, 6), scale, sampling_ratio, 'avg', aligned)
    else:
        out = mmcv.ops.roi_align(x.to(dtype), rois.to(dtype), (7, 6), scale, sampling_ratio,
                                 'avg', aligned)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return out, grad


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, 'bf16'])
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2, 3])
@pytest.mark.parametrize('scale', [1.0, 0.5, 0.25, 0.0625])
def test_roi_align_values_and_gradients(exts, dtype, aligned, sampling_ratio, scale):
    g = torch.Generator().manual_seed(int(scale * 1000) + sampling_ratio)
    feats = torch.randn(2, 5, 14, 17, generator=g)
    rois = rois_for(scale, 14, 17, g)
    compiled, provided = on_both(
        exts, lambda: roi_align_run(feats, rois, scale, sampling_ratio, aligned, dtype))
    assert compiled[0].abs().sum() > 0 and compiled[1].abs().sum() > 0
    assert_same(compiled, provided)


# ----------------------------------------------------------------------------------- NMS

def tied_boxes(n: int, g: torch.Generator):
    """Integer-grid boxes (many equal IoUs) with scores on five levels (many ties)."""
    xy = torch.randint(0, 60, (n, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(2, 20, (n, 2), generator=g)], 1)
    return boxes, torch.randint(0, 5, (n,), generator=g).float() / 4


@pytest.mark.parametrize('iou', [0.3, 1 / 3, 0.5, 0.7, 0.0, 1.0])
@pytest.mark.parametrize('score_threshold, max_num', [(0, -1), (0.3, 20)])
def test_nms_same_boxes_in_the_same_order(exts, iou, score_threshold, max_num):
    g = torch.Generator().manual_seed(int(iou * 100))
    boxes, scores = tied_boxes(400, g)
    compiled, provided = on_both(exts, lambda: mmcv.ops.nms(
        boxes, scores, iou, score_threshold=score_threshold, max_num=max_num))
    assert len(compiled[1]) > 1
    assert_same(compiled, provided)


@pytest.mark.parametrize('boxes, scores, iou', [
    ([[0, 0, 4, 3], [0, 0, 2, 3]], [0.9, 0.8], 0.5),       # IoU exactly 0.5
    ([[0, 0, 3, 1], [0, 0, 10, 1]], [0.9, 0.8], 0.3),      # IoU 0.3f, above 0.3 in float64
    ([[0, 0, 3, 1], [0, 0, 10, 1]], [0.8, 0.8], 0.3),      # and tied scores
    ([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]], [0.5, 0.5, 0.5], 0.5),
    ([[1, 1, 5, 5]], [0.1], 0.5),                          # one box
    (torch.zeros(0, 4), torch.zeros(0), 0.5),              # no box
])
def test_nms_edges(exts, boxes, scores, iou):
    boxes, scores = torch.as_tensor(boxes).float(), torch.as_tensor(scores).float()
    compiled, provided = on_both(exts, lambda: mmcv.ops.nms(boxes, scores, iou))
    assert_same(compiled, provided)


@pytest.mark.parametrize('nms_cfg', [dict(iou_threshold=0.5),
                                     dict(iou_threshold=0.6, class_agnostic=True),
                                     dict(iou_threshold=0.5, split_thr=50, max_num=30)])
def test_batched_nms_with_class_offsets(exts, nms_cfg):
    g = torch.Generator().manual_seed(5)
    boxes, scores = tied_boxes(300, g)
    labels = torch.randint(0, 4, (300,), generator=g)
    compiled, provided = on_both(exts, lambda: mmcv.ops.batched_nms(boxes, scores, labels,
                                                                    nms_cfg))
    assert len(compiled[1]) > 4
    assert_same(compiled, provided)


# ------------------------------------------------------------------------- whole models

CONFIGS = {
    'mask-rcnn': ('configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py',
                  'mmdet', 'coco'),
    'vitdet': ('configs/coco/vitdet_mask-rcnn_vit-tiny-p8_1xb2-20iter_coco-synthetic-64.py',
               'mmdet', 'coco'),
    'upernet': ('configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
                'mmseg', 'ade20k'),
}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('data')), num_train=4, num_val=2,
                         size=(64, 80), seed=0, views=('ade20k', 'coco'))


def load(name: str, data_root: dict, amp: bool):
    path, scope, view = CONFIGS[name]
    cfg = Config.fromfile(os.path.join(ROOT, path))
    root = data_root[view] + '/'
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = root
    if view == 'coco':
        cfg.val_dataloader.dataset.ann_file = 'annotations/instances_val2017.json'
    if amp:
        configure_amp(cfg, None)
    registry = importlib.import_module(f'{scope}.registry')
    with DefaultScope.overwrite_default_scope(scope):
        train = registry.DATASETS.build(cfg.train_dataloader.dataset)
        val = registry.DATASETS.build(cfg.val_dataloader.dataset)
        torch.manual_seed(0)
        batches = ([pseudo_collate([train[i], train[i + 1]]) for i in (0, 2)],
                   pseudo_collate([val[0], val[1]]))
    return cfg, scope, registry.MODELS, batches


def predictions(samples) -> list:
    """Detections (boxes, scores, labels, masks) or segmentation maps of each sample."""
    out = []
    for s in samples:
        if 'pred_instances' in s:
            p = s.pred_instances
            out.append((p.bboxes, p.scores, p.labels, p.masks))
        else:
            out.append((s.pred_sem_seg.data, s.seg_logits.data))
    return out


def train_and_predict(cfg, scope, models, batches):
    """Two training steps from a seeded initialisation (every loss term), then predictions."""
    train_batches, val_batch = batches
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        model = models.build(copy.deepcopy(cfg.model))
        model.init_weights()
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        logs = []
        for step, batch in enumerate(train_batches):
            torch.manual_seed(step)
            logs.append({k: v.item() for k, v in
                         model.train_step(copy.deepcopy(batch), wrapper).items()})
        model.eval()
        with torch.no_grad():
            preds = predictions(model.test_step(copy.deepcopy(val_batch)))
    return logs, preds


@pytest.mark.slow
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_tiny_models_train_and_predict_the_same(exts, data_root, name, amp):
    cfg, scope, models, batches = load(name, data_root, amp)
    runs, calls = [], [Counter(), Counter()]
    for ext, counter in zip(exts, calls):
        with serving(ext, counter):
            runs.append(train_and_predict(cfg, scope, models, batches))
    (logs, preds), (p_logs, p_preds) = runs
    calls, p_calls = calls
    assert calls == p_calls
    assert set(calls) == (set(mmcv_ops.PROVIDED) if scope == 'mmdet' else set())
    if scope == 'mmdet':
        assert all(len(p[0]) > 0 for p in preds)
    assert logs == p_logs
    assert_same(preds, p_preds)


def test_compiled_roi_align_refuses_bf16_which_is_why_the_amp_extractor_casts(exts):
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    extractor = SingleRoIExtractor(roi_layer=dict(type='RoIAlign', output_size=7,
                                                  sampling_ratio=0),
                                   out_channels=8, featmap_strides=[4])
    rois = torch.tensor([[0, 1., 2., 30., 40.]])
    with pytest.raises(NotImplementedError, match='BFloat16'):
        extractor((torch.randn(1, 8, 16, 16).bfloat16(),), rois)
