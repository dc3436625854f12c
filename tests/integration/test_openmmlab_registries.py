"""mmseg and mmdet configs build our modules by their scoped names."""
import pytest
import torch


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
