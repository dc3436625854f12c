"""ADE20K protocol = mmseg's MAE recipe behind the 48.13 reference
(``mmseg/.mim/configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py``):

(a) our ``mixedae.ViT`` with our config's backbone settings and mmseg's ``MAE`` backbone with
    mmseg's settings compute the same four feature maps from the same weights, read through
    ``tools/convert_checkpoint.py --src-format mmseg``;
(b) our layer-decay constructor and mmseg's give every parameter the same lr and weight decay.
The whole-config comparison is in ``tests/parity/test_protocol_configs.py``.
"""
import os

import mmseg
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmseg.models.backbones import BEiT, MAE
from mmseg.registry import MODELS as SEG_MODELS

import mixedae  # noqa: F401  (registers the mixedae modules)
from mixedae.models import ViT
from mixedae.models.backbones.checkpoint_layouts import (convert_checkpoint, extract_backbone,
                                                         mmseg_to_timm_names)
from mixedae.utils.checkpoint import CheckpointError
from support import ROOT

OURS = os.path.join(ROOT, 'configs/ade20k/upernet_vit-b16-mae_8xb2-160k_ade20k-512x512.py')
THEIRS = os.path.join(os.path.dirname(mmseg.__file__),
                      '.mim/configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
#: the feature test runs the real ViT-B settings on 128 x 128 inputs (CPU time); the image
#: size only sets the token grid, every per-block setting is the configs'.
IMG = 128


def backbone_kwargs(path: str, **override) -> dict:
    kw = dict(Config.fromfile(path).model.backbone)
    kw.pop('type')
    kw.pop('init_cfg', None)
    kw.update(override)
    return kw


@torch.no_grad()
def randomize(model: torch.nn.Module) -> None:
    """Random weights everywhere, so that every parameter (norms, layer scale, relative
    position tables, class token) shows in the features."""
    for name, p in model.named_parameters():
        if name.endswith(('ln1.weight', 'ln2.weight')) or 'gamma' in name:
            p.uniform_(0.5, 1.5)
        elif 'relative_position_bias_table' in name:
            p.normal_(0, 0.5)
        else:
            p.normal_(0, 0.02)


def test_mmseg_names_map_onto_ours():
    sd = {'patch_embed.projection.weight': 1, 'ln1.bias': 2, 'layers.3.ln2.weight': 3,
          'layers.3.gamma_1': 4, 'layers.0.ffn.layers.0.0.bias': 5,
          'layers.0.ffn.layers.1.weight': 6, 'layers.11.attn.relative_position_bias_table': 7,
          'cls_token': 8}
    assert mmseg_to_timm_names(sd) == {
        'patch_embed.proj.weight': 1, 'norm.bias': 2, 'blocks.3.norm2.weight': 3,
        'blocks.3.ls1.gamma': 4, 'blocks.0.mlp.fc1.bias': 5, 'blocks.0.mlp.fc2.weight': 6,
        'blocks.11.attn.relative_position_bias_table': 7, 'cls_token': 8}
    with pytest.raises(CheckpointError, match='q_bias and v_bias come in pairs'):
        mmseg_to_timm_names({'layers.0.attn.q_bias': torch.zeros(4)})
    with pytest.raises(CheckpointError, match='not recognised.*layers.0.unknown'):
        extract_backbone({'layers.0.unknown': torch.zeros(1)}, 'mmseg')


def test_mae_backbone_features_equal_mmseg():
    theirs = MAE(**backbone_kwargs(THEIRS, img_size=(IMG, IMG)))
    theirs.eval()  # mmseg's BEiT.train() returns None
    randomize(theirs)
    # an mmseg segmentor state dict: backbone weights plus heads
    ckpt = {f'backbone.{k}': v for k, v in theirs.state_dict().items()}
    ckpt['decode_head.conv_seg.weight'] = torch.zeros(150, 768, 1, 1)
    sd, dropped = extract_backbone(dict(state_dict=ckpt, meta=dict()), 'mmseg')
    assert 'decode_head.conv_seg.weight' in dropped
    ours = ViT(**backbone_kwargs(OURS, img_size=(IMG, IMG)))
    ours.load_backbone_state(sd, 'mmseg MAE')
    assert set(sd) == set(ours.state_dict())            # every tensor of ours comes from theirs
    ours.eval()
    x = torch.randn(1, 3, IMG, IMG)
    a, b = ours(x), theirs(x)
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b):
        assert fa.shape == fb.shape == (1, 768, IMG // 16, IMG // 16)
        torch.testing.assert_close(fa, fb, rtol=1e-4, atol=1e-4)


def test_checkpoint_pos_embed_is_resized_as_mmseg():
    """A 224-pixel checkpoint's 14 x 14 table (here 4 x 4) loaded at 512 (here 8 x 8)."""
    theirs = MAE(img_size=(128, 128), patch_size=16, embed_dims=32, num_layers=1, num_heads=4)
    ours = ViT(img_size=128, patch_size=16, embed_dim=32, depth=1, num_heads=4)
    pos = torch.randn(1, 1 + 16, 32)
    expected = theirs.resize_abs_pos_embed({'pos_embed': pos})['pos_embed']
    got, notes = ours.adapt_state_dict({'pos_embed': pos}, 'checkpoint')
    assert got['pos_embed'].shape == (1, 1 + 64, 32) and notes
    torch.testing.assert_close(got['pos_embed'], expected)


def test_beit_q_v_biases_become_a_fused_qkv_bias(tmp_path):
    """mmseg's BEiT stores q_bias / v_bias (no key bias): the same features after
    ``tools/convert_checkpoint.py --src-format mmseg``."""
    kw = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2, num_heads=4,
              out_indices=(0, 1), init_values=0.1, norm_cfg=dict(type='LN', eps=1e-6))
    theirs = BEiT(**kw)
    theirs.eval()
    randomize(theirs)
    sd, dropped = extract_backbone(theirs.state_dict(), 'mmseg')
    assert torch.equal(sd['blocks.0.attn.qkv.bias'][32:64], torch.zeros(32))
    assert dropped == ['blocks.0.attn.relative_position_index',
                       'blocks.1.attn.relative_position_index']
    ours = ViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, out_indices=(0, 1),
               final_norm=False, use_abs_pos_embed=False, use_rel_pos_bias=True,
               init_values=0.1).eval()
    torch.save(theirs.state_dict(), tmp_path / 'beit.pth')
    convert_checkpoint(str(tmp_path / 'beit.pth'), str(tmp_path / 'ours.pth'), 'mmseg')
    ours.load_pretrained(str(tmp_path / 'ours.pth'))
    assert set(torch.load(tmp_path / 'ours.pth')['state_dict']) == set(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for fa, fb in zip(ours(x), theirs(x)):
        torch.testing.assert_close(fa, fb, rtol=1e-4, atol=1e-4)


def test_layer_decay_groups_equal_mmseg():
    ours_cfg, theirs_cfg = Config.fromfile(OURS), Config.fromfile(THEIRS)
    with DefaultScope.overwrite_default_scope('mmseg'):
        ours_cfg.model.backbone.pop('init_cfg')
        theirs_cfg.model.pretrained = None
        ours_model = SEG_MODELS.build(ours_cfg.model)
        theirs_model = SEG_MODELS.build(theirs_cfg.model)
        groups = {}
        for tag, model, cfg in (('ours', ours_model, ours_cfg), ('theirs', theirs_model,
                                                                  theirs_cfg)):
            wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
            where = {id(p): (g['lr'], g['weight_decay'])
                     for g in wrapper.optimizer.param_groups for p in g['params']}
            groups[tag] = {n: where[id(p)] for n, p in model.named_parameters()}

    def our_name(name: str) -> str:
        if not name.startswith('backbone.'):
            return name
        return 'backbone.' + next(iter(mmseg_to_timm_names({name[9:]: None})))

    mapped = {our_name(n): v for n, v in groups['theirs'].items()}
    assert set(mapped) == set(groups['ours'])
    for name, (lr, wd) in groups['ours'].items():
        assert lr == pytest.approx(mapped[name][0], rel=1e-12), name
        assert wd == mapped[name][1], name
    # the rule itself, on a few names: block 0 gets 0.65^12, the embeddings 0.65^13
    assert groups['ours']['backbone.blocks.0.attn.qkv.weight'] == (pytest.approx(1e-4 * .65 ** 12),
                                                                 0.05)
    assert groups['ours']['backbone.pos_embed'] == (pytest.approx(1e-4 * .65 ** 13), 0.05)
    assert groups['ours']['decode_head.conv_seg.bias'] == (1e-4, 0.)
