"""mixedae's torchvision-backed mmcv._ext: references in plain torch, and what it refuses.

Runs in any environment: the provider is handed to mmcv's Python wrappers in place of whatever
``mmcv._ext`` is installed. Its equality with mmcv's compiled kernels is tests/parity.
"""
import importlib.util
import inspect
import math
import sys

import mmcv.ops
import pytest
import torch

from mixedae.utils import mmcv_ops

# the modules, not the functions mmcv.ops exports under the same names
OP_MODULES = [importlib.import_module(f'mmcv.ops.{name}') for name in ('nms', 'roi_align')]


@pytest.fixture
def provider(monkeypatch):
    ext = mmcv_ops.build_ext()
    for module in OP_MODULES:
        monkeypatch.setattr(module, 'ext_module', ext)
    return ext


def axis_weights(coords, size):
    """Bilinear weights (len(coords), size) of mmcv/Detectron2 RoIAlign along one axis."""
    weights = torch.zeros(len(coords), size, dtype=torch.float64)
    for row, c in enumerate(coords.tolist()):
        if c < -1.0 or c > size:
            continue
        c = max(c, 0.0)
        low = int(c)
        if low >= size - 1:
            low = high = size - 1
            c = float(low)
        else:
            high = low + 1
        weights[row, low] += 1 - (c - low)
        weights[row, high] += c - low
    return weights


def reference_roi_align(feats, rois, out_size, scale, sampling_ratio, aligned):
    """RoIAlign (average) written out: one separable bilinear grid per RoI, then bin means."""
    out_h, out_w = out_size
    outs = []
    for roi in rois.tolist():
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - offset for v in roi[1:])
        w, h = x2 - x1, y2 - y1
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(w / out_w)
        ys = y1 + torch.arange(out_h, dtype=torch.float64)[:, None] * (h / out_h) + (
            torch.arange(grid_h, dtype=torch.float64) + 0.5) * (h / out_h / grid_h)
        xs = x1 + torch.arange(out_w, dtype=torch.float64)[:, None] * (w / out_w) + (
            torch.arange(grid_w, dtype=torch.float64) + 0.5) * (w / out_w / grid_w)
        f = feats[int(roi[0])]
        wy = axis_weights(ys.flatten(), f.shape[1]).to(f)
        wx = axis_weights(xs.flatten(), f.shape[2]).to(f)
        samples = torch.einsum('yh,chw,xw->cyx', wy, f, wx)
        outs.append(samples.reshape(-1, out_h, grid_h, out_w, grid_w).mean((2, 4)))
    return torch.stack(outs)


def reference_nms(boxes, scores, iou_threshold):
    """mmcv's CPU NMS written out: greedy in ``scores.sort(descending=True)`` order, fp32 IoU."""
    order = scores.sort(0, descending=True)[1].tolist()
    threshold = torch.tensor(iou_threshold, dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep, removed = [], set()
    for pos, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            lt = torch.maximum(boxes[i, :2], boxes[j, :2])
            rb = torch.minimum(boxes[i, 2:], boxes[j, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            if inter / (area[i] + area[j] - inter) > threshold:
                removed.add(j)
    return keep


ROIS = torch.tensor([[0, 1.0, 2.0, 20.0, 17.0],
                     [1, -6.0, -3.0, 9.0, 12.0],     # beyond the top-left border
                     [0, 25.0, 20.0, 40.0, 36.0],    # beyond the bottom-right border
                     [1, 8.0, 8.0, 8.5, 8.2]],       # smaller than a bin
                    dtype=torch.float64)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('scale', [1.0, 0.5])
def test_roi_align_and_its_gradient_match_the_written_out_definition(
        provider, aligned, sampling_ratio, scale):
    feats = torch.randn(2, 3, 16, 18, dtype=torch.float64, requires_grad=True)
    rois = ROIS.clone()
    rois[:, 1:] /= scale
    out = mmcv.ops.roi_align(feats, rois, (5, 4), scale, sampling_ratio, 'avg', aligned)
    ref = reference_roi_align(feats, rois, (5, 4), scale, sampling_ratio, aligned)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), feats)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), feats)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_roi_align_with_aligned_ignored_differs_from_the_definition(provider):
    feats = torch.randn(2, 3, 16, 18, dtype=torch.float64)
    out = mmcv.ops.roi_align(feats, ROIS, (5, 4), 1.0, 2, 'avg', False)
    ref = reference_roi_align(feats, ROIS, (5, 4), 1.0, 2, True)
    assert (out - ref).abs().max() > 0.01


def test_roi_align_runs_bf16_in_fp32_and_rounds(provider):
    feats = torch.randn(2, 3, 16, 18).bfloat16()
    rois = ROIS.bfloat16()
    out = mmcv.ops.roi_align(feats, rois, (5, 4), 1.0, 0, 'avg', True)
    ref = mmcv.ops.roi_align(feats.float(), rois.float(), (5, 4), 1.0, 0, 'avg', True)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref.bfloat16())


def test_nms_keeps_mmcv_order_with_ties_and_the_edge_threshold(provider):
    g = torch.Generator().manual_seed(3)
    xy = torch.randint(0, 40, (60, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(2, 12, (60, 2), generator=g)], 1)
    scores = torch.randint(0, 6, (60,), generator=g).float() / 5   # many ties
    for iou in (0.3, 0.5, 1 / 3, 0.7):
        dets, keep = mmcv.ops.nms(boxes, scores, iou)
        assert keep.tolist() == reference_nms(boxes, scores, iou)
        assert torch.equal(dets, torch.cat([boxes[keep], scores[keep, None]], 1))


def test_nms_iou_exactly_at_the_threshold_is_kept(provider):
    # mmcv suppresses only IoU > threshold, both in fp32: IoU 6/12 at threshold 0.5, and IoU
    # 3/10 (0.3f, which is above 0.3 in float64) at threshold 0.3, keep the second box
    scores = torch.tensor([0.9, 0.8])
    half = torch.tensor([[0.0, 0.0, 4.0, 3.0], [0.0, 0.0, 2.0, 3.0]])
    assert mmcv.ops.nms(half, scores, 0.5)[1].tolist() == [0, 1]
    assert mmcv.ops.nms(half, scores, 0.4999)[1].tolist() == [0]
    third = torch.tensor([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 10.0, 1.0]])
    assert (torch.tensor(3.0) / 10.0).item() > 0.3
    assert mmcv.ops.nms(third, scores, 0.3)[1].tolist() == reference_nms(third, scores, 0.3) == [0, 1]
    assert mmcv.ops.nms(third, scores, 0.2999)[1].tolist() == [0]


def test_nms_of_no_box_one_box_and_bf16_boxes(provider):
    dets, keep = mmcv.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert dets.shape == (0, 5) and keep.dtype == torch.long and keep.numel() == 0
    assert mmcv.ops.nms(torch.tensor([[1.0, 1, 3, 3]]), torch.tensor([0.2]), 0.5)[1].tolist() == [0]
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.5, 0, 4.5, 4], [10, 10, 12, 12]])
    scores = torch.tensor([0.5, 0.6, 0.1])
    keep = mmcv_ops.nms(boxes.bfloat16(), scores.bfloat16(), 0.5, 0)
    assert keep.tolist() == mmcv_ops.nms(boxes, scores, 0.5, 0).tolist() == [1, 2]


def test_batched_nms_keeps_classes_apart(provider):
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.2, 0, 4.2, 4], [0.1, 0, 4.1, 4], [30, 30, 34, 34]])
    scores = torch.tensor([0.9, 0.8, 0.8, 0.3])
    labels = torch.tensor([0, 1, 0, 1])
    dets, keep = mmcv.ops.batched_nms(boxes, scores, labels, dict(iou_threshold=0.5))
    assert keep.tolist() == [0, 1, 3]
    dets, keep = mmcv.ops.batched_nms(boxes, scores, labels, dict(iou_threshold=0.5),
                                      class_agnostic=True)
    assert keep.tolist() == [0, 3]


def test_an_op_it_does_not_serve_fails_when_called_and_names_the_switch():
    ext = mmcv_ops.build_ext()
    assert hasattr(ext, 'deform_conv_forward')
    with pytest.raises(mmcv_ops.MissingMmcvOpError,
                       match=r"'deform_conv_forward' is not available.*MIXEDAE_MMCV_OPS=1 make setup"):
        ext.deform_conv_forward(torch.zeros(1))
    with pytest.raises(mmcv_ops.MissingMmcvOpError, match="'roi_align_forward' with pool_mode='max'"):
        ext.roi_align_forward(*([torch.zeros(1)] * 5), aligned_height=1, aligned_width=1,
                              spatial_scale=1.0, sampling_ratio=0, pool_mode=0, aligned=True)
    with pytest.raises(mmcv_ops.MissingMmcvOpError, match="'nms' with offset=1"):
        ext.nms(torch.zeros(1, 4), torch.zeros(1), iou_threshold=0.5, offset=1)


def test_dunder_lookups_raise_attribute_error_so_inspect_works():
    ext = mmcv_ops.build_ext()
    for name in ('__file__', '__path__', '__wrapped__', '__all__'):
        assert not hasattr(ext, name)
    assert inspect.ismodule(ext) and dict(inspect.getmembers(ext))['__name__'] == 'mmcv._ext'
    assert ext.__name__ == 'mmcv._ext' and ext.__spec__.name == 'mmcv._ext'


def test_install_fills_sys_modules_once_and_only_without_compiled_ops(monkeypatch):
    monkeypatch.delitem(sys.modules, 'mmcv._ext', raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'mmcv._ext' else real_find_spec(name, *a))
    mmcv_ops.install()
    first = sys.modules['mmcv._ext']
    assert isinstance(first, mmcv_ops.TorchvisionExt)
    mmcv_ops.install()
    assert sys.modules['mmcv._ext'] is first and not mmcv_ops.compiled_mmcv_ops()
    monkeypatch.delitem(sys.modules, 'mmcv._ext')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: object())
    mmcv_ops.install()
    assert 'mmcv._ext' not in sys.modules


def test_mmdet_and_mmseg_models_import_and_reach_the_installed_ext():
    import mmdet.models  # noqa: F401
    import mmseg.models  # noqa: F401
    assert all(module.ext_module is sys.modules['mmcv._ext'] for module in OP_MODULES)


#: boxes whose coordinates every float dtype holds exactly, so any difference between box
#: dtypes comes from the dtype the op computes in
EXACT_ROIS = torch.tensor([[0, 1.0, 2.0, 12.5, 9.0], [1, 3.0, 0.5, 15.0, 14.0]])


@pytest.mark.parametrize('feat_dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_roi_align_backward_computes_in_one_dtype_whatever_the_boxes_dtype_under_autocast(
        provider, feat_dtype):
    """Under autocast the boxes may come in any float dtype (fp16/bf16 from an autocast region,
    fp32 or fp64 from the box coder); the gradient is the one computed with boxes in the
    features' compute dtype (fp32 for bf16 features), bit for bit, in the features' dtype."""
    feats = torch.randn(2, 3, 16, 18).to(feat_dtype)
    weights = torch.randn(2, 3, 5, 4)

    def grad(rois, autocast):
        x = feats.clone().requires_grad_(True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = mmcv.ops.roi_align(x, rois, (5, 4), 1.0, 2, 'avg', True)
            (g,) = torch.autograd.grad((out.float() * weights).sum(), x)
        return g

    reference = grad(EXACT_ROIS.to(feats.dtype if feat_dtype != torch.bfloat16
                                   else torch.float32), autocast=False)
    assert reference.dtype == feat_dtype and reference.abs().sum() > 0
    for box_dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        g = grad(EXACT_ROIS.to(box_dtype), autocast=True)
        assert g.dtype == feat_dtype, box_dtype
        assert torch.equal(g, reference), box_dtype
