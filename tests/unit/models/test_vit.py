"""mixedae.ViT: agreement with timm, output shapes, relative position, windows, checkpointing."""
import os

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mixedae.models import ViT
from mixedae.models.layers.attention import Attention
from support import ROOT, TINY


def timm_twin(**kw):
    """timm's VisionTransformer with the TINY architecture (the reference implementation)."""
    return VisionTransformer(img_size=TINY['img_size'], patch_size=TINY['patch_size'],
                             embed_dim=TINY['embed_dim'], depth=TINY['depth'],
                             num_heads=TINY['num_heads'], num_classes=0, **kw).eval()


def test_matches_timm_vit_numerically():
    ref = timm_twin()
    model = ViT(**TINY, out_indices=(0, 1)).eval()
    assert not model.load_state_dict(ref.state_dict(), strict=False).missing_keys
    x = torch.randn(2, 3, 32, 32)
    expected = ref.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
    outs = model(x)
    assert len(outs) == 2
    torch.testing.assert_close(outs[1], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[0], outs[1])  # block 0 output is not normalised/final


@pytest.mark.parametrize('size,grid', [((32, 32), (4, 4)), ((64, 48), (8, 6)), ((40, 30), (5, 4)),
                                       ((24, 56), (3, 7))])
def test_output_shapes(size, grid):
    model = ViT(**TINY, out_indices=(0, -1)).eval()
    outs = model(torch.randn(2, 3, *size))
    assert [o.shape for o in outs] == [torch.Size([2, 32, *grid])] * 2


def test_out_indices_validated():
    with pytest.raises(ValueError, match='out of range'):
        ViT(**TINY, out_indices=(2,))
    with pytest.raises(ValueError, match='with_cls_token=False'):
        ViT(**TINY, window_size=2, window_block_indexes=(0,))
    with pytest.raises(ValueError, match='window_size is 0'):
        ViT(**TINY, with_cls_token=False, window_block_indexes=(0,))


def test_pos_embed_is_resampled_for_other_input_sizes():
    model = ViT(**TINY).eval()
    x = torch.randn(1, 3, 48, 64)
    tokens, grid = model.prepare_tokens(x)
    assert grid == (6, 8) and tokens.shape == (1, 1 + 48, 32)
    from timm.layers import resample_abs_pos_embed
    pos = resample_abs_pos_embed(model.pos_embed, [6, 8], [4, 4], num_prefix_tokens=1,
                                 antialias=False)  # plain bicubic, as mmseg and mmdet
    patches = model.patch_embed(x).reshape(1, 48, 32)
    torch.testing.assert_close(tokens[:, 1:], patches + pos[:, 1:])
    torch.testing.assert_close(tokens[:, :1], model.cls_token + pos[:, :1])


def test_zero_relative_bias_and_unit_layer_scale_change_nothing():
    plain = ViT(**TINY).eval()
    rel = ViT(**TINY, use_rel_pos_bias=True, init_values=1.0).eval()
    missing = rel.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert all('relative_position_bias_table' in k or '.ls' in k for k in missing)
    x = torch.randn(2, 3, 40, 32)
    torch.testing.assert_close(rel(x)[0], plain(x)[0])
    with torch.no_grad():
        rel.blocks[0].attn.relative_position_bias_table.normal_()
    assert not torch.allclose(rel(x)[0], plain(x)[0])


def manual_attention(attn: Attention, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / attn.head_dim ** 0.5 + bias
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


def test_relative_bias_enters_attention_as_beit_defines_it():
    attn = Attention(32, 4, rel_pos_grid=(3, 3), with_cls_token=True).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 10, 32)
    table = attn.relative_position_bias_table
    bias = torch.empty(4, 10, 10)
    coords = [(i // 3, i % 3) for i in range(9)]
    for i in range(10):
        for j in range(10):
            if i == 0 and j == 0:
                row = 25 + 2
            elif i == 0:
                row = 25
            elif j == 0:
                row = 25 + 1
            else:
                dh = coords[i - 1][0] - coords[j - 1][0]
                dw = coords[i - 1][1] - coords[j - 1][1]
                row = (dh + 2) * 5 + (dw + 2)
            bias[:, i, j] = table[row]
    torch.testing.assert_close(attn(x, (3, 3)), manual_attention(attn, x, bias),
                               atol=1e-5, rtol=1e-5)


def test_relative_bias_follows_other_input_sizes():
    model = ViT(**TINY, use_rel_pos_bias=True).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.relative_position_bias_table.normal_()
    assert model(torch.randn(1, 3, 56, 40))[0].shape == (1, 32, 7, 5)


def windowed(window: int, **kw) -> ViT:
    return ViT(**TINY, with_cls_token=False, window_size=window, window_block_indexes=(0, 1),
               **kw).eval()


def test_window_covering_the_whole_grid_equals_global_attention():
    win = windowed(4, use_rel_pos_bias=True)
    glob = ViT(**TINY, with_cls_token=False, use_rel_pos_bias=True).eval()
    glob.load_state_dict(win.state_dict())
    with torch.no_grad():
        for a, b in zip(win.blocks, glob.blocks):
            a.attn.relative_position_bias_table.normal_()
            b.attn.relative_position_bias_table.copy_(a.attn.relative_position_bias_table)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(win(x)[0], glob(x)[0], atol=1e-5, rtol=1e-5)


def test_window_attention_is_local_with_padding():
    # a 6x5 grid cut into 4x4 windows (padded to 8x8); one windowed block, no position mixing
    model = ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4,
                with_cls_token=False, use_abs_pos_embed=False, window_size=4,
                window_block_indexes=(0,)).eval()
    x = torch.randn(1, 3, 48, 40)
    y = x.clone()
    y[:, :, :8, :8] += 1.0          # change patch (0, 0) only
    diff = (model(x)[0] - model(y)[0]).abs().sum(1)[0]      # 6 x 5
    assert diff[:4, :4].min() > 0          # the first window sees the change
    assert diff[4:, :].max() == 0 and diff[:, 4:].max() == 0   # other windows do not


def test_gradient_checkpointing_gives_same_values_and_grads():
    ref = ViT(**TINY, drop_path_rate=0.0).train()
    ckp = ViT(**TINY, with_cp=True).train()
    ckp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    out_ref, out_ckp = ref(x)[0], ckp(x)[0]
    torch.testing.assert_close(out_ckp, out_ref)
    out_ref.square().mean().backward()
    out_ckp.square().mean().backward()
    for (name, p), q in zip(ref.named_parameters(), ckp.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_get_layer_depth():
    model = ViT(**TINY)
    assert model.get_layer_depth('backbone.cls_token', 'backbone.') == (0, 4)
    assert model.get_layer_depth('pos_embed') == (0, 4)
    assert model.get_layer_depth('patch_embed.proj.weight') == (0, 4)
    assert model.get_layer_depth('blocks.0.attn.qkv.weight') == (1, 4)
    assert model.get_layer_depth('blocks.1.mlp.fc2.bias') == (2, 4)
    assert model.get_layer_depth('norm.weight') == (3, 4)


def test_blocks_build_their_attention_with_the_contract_and_bound_rel_pos_options():
    """Block calls attn_layer(dim, num_heads, qkv_bias, attn_drop, proj_drop); relative
    positions reach the attention only bound in by the ViT (one window's grid in a windowed
    block), so an attention without them takes no arguments it does not use."""
    options = []

    class Recording(Attention):
        def __init__(self, dim, num_heads, qkv_bias, attn_drop, proj_drop, **rel_pos):
            options.append(rel_pos)
            super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop, **rel_pos)

    ViT(**TINY, attn_layer=Recording)
    assert options == [{}, {}]
    options.clear()
    ViT(**TINY, with_cls_token=False, use_rel_pos_bias=True, rel_pos_type='decomposed',
        window_size=2, window_block_indexes=(0,), attn_layer=Recording)
    assert options == [dict(rel_pos_grid=(2, 2), with_cls_token=False, rel_pos_type='decomposed'),
                       dict(rel_pos_grid=(4, 4), with_cls_token=False, rel_pos_type='decomposed')]


def test_mae_init_mode_is_the_pretrainings_start():
    """init_mode='mae' (the random-init floor of the scratch configs): MAE's initialisation,
    as the pretraining encoder has it; the default stays timm's."""
    import math
    from mmengine.config import Config
    from mixedae.models import MixedViT
    from mixedae.models.layers.pos_embed import sincos_2d_pos_embed
    arch = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    mae = ViT(**arch, init_mode='mae')
    assert torch.equal(mae.pos_embed, sincos_2d_pos_embed(32, (4, 4), num_prefix_tokens=1))
    assert mae.pos_embed.requires_grad                      # fixed values, still learned
    for m in mae.modules():
        if isinstance(m, torch.nn.Linear):
            bound = math.sqrt(6 / sum(m.weight.shape))     # xavier-uniform
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
            assert not m.bias.any()
    pretrain = MixedViT(**arch, group_size=4)
    assert torch.equal(mae.pos_embed, pretrain.pos_embed)
    timm = ViT(**arch)
    assert not torch.equal(timm.pos_embed, mae.pos_embed)
    assert timm.blocks[0].mlp.fc1.weight.std() < 0.03      # truncated normal 0.02
    with pytest.raises(ValueError, match="init_mode must be one of \\('timm', 'mae'\\), got 'xavier'"):
        ViT(**arch, init_mode='xavier')
    with pytest.raises(ValueError, match="does not take 'init_mode'"):
        MixedViT(**arch, group_size=4, init_mode='timm')
    # the random-init configs start from it
    for path in ('configs/ade20k/upernet_vit-b16-scratch_8xb2-160k_ade20k-512x512.py',
                 'configs/ade20k/linear_vit-b16-scratch_8xb2-40k_ade20k-512x512.py',
                 'configs/coco/mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py',
                 'configs/coco/vitdet_mask-rcnn_vit-b16-scratch_16xb4-100e_coco-lsj-1024.py'):
        assert Config.fromfile(os.path.join(ROOT, path)).model.backbone.init_mode == 'mae', path
