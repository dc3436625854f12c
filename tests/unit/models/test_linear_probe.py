"""The linear probe: LinearProbeHead (BN + 1x1 only) and the frozen ViT backbone under training."""
import copy
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mixedae.models import ViT
from mixedae.models.segmentation import LinearProbeHead
from support import REPO, ROOT, TINY

PROBE_TINY = REPO.config('ade20k_linear-tiny')
METHODS = ('scratch', 'mae', 'mixedae', 'ibot')


def probe_b16(method):
    return os.path.join(ROOT, f'configs/ade20k/linear_vit-b16-{method}_8xb2-40k_ade20k-512x512.py')


def head(**kw):
    """The head built in mmseg's scope (its loss comes from mmseg's registry, whatever scope an
    earlier test left current)."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        return LinearProbeHead(in_channels=32, channels=32, num_classes=7,
                               norm_cfg=dict(type='BN'), **kw)


def build(model_cfg):
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(model_cfg)


def test_head_is_batch_norm_and_a_linear_classifier():
    h = head().eval()
    c, k = 32, 7
    assert sum(p.numel() for p in h.parameters()) == 2 * c + c * k + k
    assert [type(m).__name__ for m in h.children() if list(m.parameters())] == \
        ['Conv2d', 'BatchNorm2d']
    assert h.conv_seg.kernel_size == (1, 1) and h.dropout is None
    x = torch.randn(2, c, 5, 6)
    out = h((torch.randn(2, c, 3, 3), x))                       # in_index=-1: the last map
    assert out.shape == (2, k, 5, 6)
    # per patch: the classifier applied to the normalised feature
    bn = h.bn
    z = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    z = z * bn.weight[:, None, None] + bn.bias[:, None, None]
    expected = torch.einsum('bchw,kc->bkhw', z, h.conv_seg.weight[:, :, 0, 0]) \
        + h.conv_seg.bias[:, None, None]
    torch.testing.assert_close(out, expected)


def test_head_logits_are_upsampled_to_the_label_size():
    h = head()
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 7, (1, 40, 48)))
        samples.append(s)
    losses = h.loss((torch.randn(2, 32, 5, 6),), samples, dict())
    assert losses['loss_ce'].ndim == 0 and torch.isfinite(losses['loss_ce'])
    logits = h.predict((torch.randn(2, 32, 5, 6),), [dict(img_shape=(40, 48))] * 2, dict())
    assert logits.shape == (2, 7, 40, 48)


def test_head_rejects_a_hidden_layer_or_no_norm():
    with pytest.raises(ValueError, match='channels=16 must equal the input channels 32'), \
            DefaultScope.overwrite_default_scope('mmseg'):
        LinearProbeHead(in_channels=32, channels=16, num_classes=7, norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match='needs norm_cfg'), \
            DefaultScope.overwrite_default_scope('mmseg'):
        LinearProbeHead(in_channels=32, channels=32, num_classes=7)


def test_frozen_vit_has_no_trainable_parameters_and_stays_in_eval_mode():
    model = ViT(**TINY, drop_path_rate=0.5, drop_rate=0.5, frozen=True)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x)[0], model(x)[0])       # no dropout / drop path
    trainable = ViT(**TINY, drop_path_rate=0.5).train()
    assert all(p.requires_grad for p in trainable.parameters()) and trainable.training


def test_frozen_backbone_is_unchanged_by_training_while_the_head_learns():
    """A few optimizer steps of the tiny probe: backbone weights bit-identical, no grads."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(PROBE_TINY)
    torch.manual_seed(0)
    model = build(cfg.model)
    model.init_weights()
    model.train()
    backbone = copy.deepcopy(model.backbone.state_dict())
    head_before = copy.deepcopy(model.decode_head.state_dict())
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    samples = []
    for _ in range(4):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(s)
    for _ in range(3):
        losses = model.loss(torch.randn(4, 3, 64, 64), samples)
        optim.update_params(sum(losses.values()))
    assert not model.backbone.training
    assert all(p.grad is None for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    changed = [k for k, v in model.decode_head.state_dict().items()
               if not torch.equal(v, head_before[k])]
    assert {'conv_seg.weight', 'bn.weight', 'bn.running_mean'} <= set(changed)


@pytest.mark.parametrize('method', METHODS)
def test_b16_probe_configs(method):
    cfg = Config.fromfile(probe_b16(method))
    backbone, head_cfg = cfg.model.backbone, cfg.model.decode_head
    assert backbone.type == 'mixedae.ViT' and backbone.frozen is True
    assert backbone.out_indices == (11,) and backbone.final_norm is True
    assert cfg.model.get('neck') is None and cfg.model.get('auxiliary_head') is None
    assert head_cfg.type == 'mixedae.LinearProbeHead'
    assert head_cfg.in_channels == head_cfg.channels == 768 and head_cfg.num_classes == 150
    assert head_cfg.norm_cfg.type == 'SyncBN'
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.train_cfg.max_iters == 40000
    assert cfg.train_dataloader.batch_size * 8 == 16
    if method == 'scratch':
        assert 'init_cfg' not in backbone
    else:
        assert method in backbone.init_cfg.checkpoint
        scratch = Config.fromfile(probe_b16('scratch')).to_dict()
        mine = cfg.to_dict()
        mine['model']['backbone'].pop('init_cfg')
        assert mine == scratch                                 # only the checkpoint differs


def test_b16_probe_model_builds_and_predicts_at_the_input_size():
    cfg = Config.fromfile(probe_b16('scratch'))
    cfg.model.backbone.update(img_size=64, embed_dim=64, depth=2, num_heads=4)
    cfg.model.decode_head.update(in_channels=64, channels=64, norm_cfg=dict(type='BN'))
    cfg.model.backbone.out_indices = (1,)
    model = build(cfg.model).eval()
    logits = model.predict(torch.randn(1, 3, 64, 80))[0].seg_logits.data
    assert logits.shape == (150, 64, 80)
