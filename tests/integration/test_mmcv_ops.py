"""The mmcv 2.1.0 build: compiled ops agree with torchvision, and mmseg/mmdet see our modules."""
import mmcv.ops as mmcv_ops
import pytest
import torch
import torchvision


def random_boxes(n, size=64.0, generator=None):
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = torch.rand(n, 2, generator=generator) * size * 0.3 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_roi_align_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 16, 16, generator=g)
    boxes = random_boxes(20, 64.0, g)
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=g).float(), boxes], dim=1)
    ours = mmcv_ops.roi_align(feats, rois, (7, 7), 0.25, 2, 'avg', True)
    ref = torchvision.ops.roi_align(feats, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2,
                                    aligned=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_roi_align_gradients_match_torchvision():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 4, 12, 12, generator=g, requires_grad=True)
    rois = torch.cat([torch.zeros(6, 1), random_boxes(6, 48.0, g)], dim=1)
    mmcv_ops.roi_align(feats, rois, (5, 5), 0.25, 2, 'avg', True).sum().backward()
    ours = feats.grad.clone()
    feats.grad = None
    torchvision.ops.roi_align(feats, rois, (5, 5), 0.25, 2, True).sum().backward()
    torch.testing.assert_close(ours, feats.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('iou', [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(iou):
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(200, 100.0, g)
    scores = torch.rand(200, generator=g)
    dets, keep = mmcv_ops.nms(boxes, scores, iou)
    ref = torchvision.ops.nms(boxes, scores, iou)
    assert keep.tolist() == ref.tolist()
    torch.testing.assert_close(dets[:, :4], boxes[ref])
    torch.testing.assert_close(dets[:, 4], scores[ref])


def test_mmseg_and_mmdet_build_our_backbone_and_constructor():
    import mixedae  # noqa: F401
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as MMSEG_MODELS

    cfg = dict(type='mixedae.ViT', img_size=32, patch_size=8, embed_dim=32, depth=2,
               num_heads=4, out_indices=(0, 1))
    for scope, registry in (('mmseg', MMSEG_MODELS), ('mmdet', MMDET_MODELS)):
        with DefaultScope.overwrite_default_scope(scope):
            backbone = registry.build(dict(cfg))
            outs = backbone(torch.randn(1, 3, 32, 32))
            assert [o.shape for o in outs] == [torch.Size([1, 32, 4, 4])] * 2
            model = torch.nn.Module()
            model.backbone = backbone
            wrapper = build_optim_wrapper(model, dict(
                optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                constructor='mixedae.LayerDecayOptimWrapperConstructor',
                paramwise_cfg=dict(layer_decay_rate=0.65)))
            lrs = sorted({g['lr'] for g in wrapper.optimizer.param_groups})
            assert lrs == pytest.approx([1e-4 * 0.65 ** k for k in (3, 2, 1, 0)])
