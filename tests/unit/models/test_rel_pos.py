"""Relative positions: BEiT bias tables (against the gather with timm's index they replace) and
ViTDet's decomposed positions (against timm's SAM encoder), values and gradients in fp32."""
from functools import partial

import pytest
import torch
import torch.nn as nn
from timm.layers.pos_embed_rel import gen_relative_position_index
from timm.models import vision_transformer_sam as sam

from mixedae.models import ViT
from mixedae.models.backbones.vit import with_rel_pos
from mixedae.models.layers.attention import Attention
from mixedae.models.layers.block import Block
from mixedae.models.layers.pos_embed import (num_relative_entries, resize_rel_pos_1d,
                                            resize_rel_pos_table)
from mixedae.models.layers.rel_pos import beit_rel_pos_bias, toeplitz_1d

TOL = dict(atol=1e-5, rtol=1e-5)


def gather_bias(table, table_grid, grid, with_cls_token):
    """The previous implementation: resize, then gather the table with the N x N BEiT index."""
    table = resize_rel_pos_table(table, table_grid, grid, with_cls_token)
    index = gen_relative_position_index(tuple(grid), class_token=with_cls_token)
    n = index.shape[0]
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


class GatherAttention(Attention):
    """Attention with the previous (gathered) BEiT bias: the reference of the new one."""

    def relative_position_bias(self, q, grid):
        return gather_bias(self.relative_position_bias_table, self.rel_pos_grid, grid,
                           self.with_cls_token).to(q.dtype)


def randomize_rel_pos(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'relative_position_bias_table' in name or 'rel_pos_' in name:
                p.normal_(std=0.5)


def assert_same_values_and_grads(model, ref, x):
    out, expected = model(x), ref(x)
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e, **TOL)
    weights = [torch.randn_like(o) for o in out]
    sum((o * w).sum() for o, w in zip(out, weights)).backward()
    sum((e * w).sum() for e, w in zip(expected, weights)).backward()
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **TOL, msg=name)


# ------------------------------------------------------------------------------- BEiT
@pytest.mark.parametrize('grid', [(3, 3), (2, 4), (5, 3)])
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_beit_bias_is_timms_index_layout(grid, with_cls_token):
    rows = num_relative_entries(grid, with_cls_token)
    table = torch.arange(rows, dtype=torch.float64).unsqueeze(1).repeat(1, 2)  # row id, 2 heads
    bias = beit_rel_pos_bias(table, grid, with_cls_token)
    index = gen_relative_position_index(grid, class_token=with_cls_token)
    assert bias.shape == (2, *index.shape)
    torch.testing.assert_close(bias[0].long(), index, rtol=0, atol=0)
    torch.testing.assert_close(bias[1], bias[0])


@pytest.mark.parametrize('table_grid,grid', [((3, 3), (3, 3)), ((3, 4), (3, 4)),
                                             ((3, 3), (4, 2)), ((4, 4), (6, 5))])
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_beit_bias_equals_the_gather_in_values_and_grads(table_grid, grid, with_cls_token):
    table = torch.randn(num_relative_entries(table_grid, with_cls_token), 3, requires_grad=True)
    ref_table = table.detach().clone().requires_grad_()
    bias = beit_rel_pos_bias(resize_rel_pos_table(table, table_grid, grid, with_cls_token),
                             grid, with_cls_token)
    expected = gather_bias(ref_table, table_grid, grid, with_cls_token)
    torch.testing.assert_close(bias, expected, rtol=0, atol=0 if grid == table_grid else 1e-6)
    upstream = torch.randn_like(bias)
    (bias * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(table.grad, ref_table.grad, **TOL)


@pytest.mark.parametrize('size', [(32, 32), (48, 40)])   # the table's grid (4, 4); another grid
def test_beit_vit_equals_the_gather_implementation(size):
    """Class token, global blocks, a grid differing from the table's: values and grads."""
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
              use_rel_pos_bias=True, init_values=0.5, out_indices=(0, 1))
    model, ref = ViT(**kw).train(), ViT(**kw, attn_layer=GatherAttention).train()
    randomize_rel_pos(model)
    ref.load_state_dict(model.state_dict())
    assert_same_values_and_grads(model, ref, torch.randn(2, 3, *size))


def test_beit_windowed_vit_equals_the_gather_implementation():
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
              with_cls_token=False, use_rel_pos_bias=True, window_size=3,
              window_block_indexes=(0,), out_indices=(0, 1))
    model, ref = ViT(**kw).train(), ViT(**kw, attn_layer=GatherAttention).train()
    randomize_rel_pos(model)
    ref.load_state_dict(model.state_dict())
    assert_same_values_and_grads(model, ref, torch.randn(2, 3, 48, 40))   # 6x5 grid, padded


def test_bias_is_built_in_the_compute_dtype_without_resizing(monkeypatch):
    for rel_pos_type, cls in (('beit', True), ('decomposed', False)):
        attn = Attention(32, 4, rel_pos_grid=(4, 3), with_cls_token=cls,
                         rel_pos_type=rel_pos_type)
        randomize_rel_pos(attn)
        q = torch.randn(2, 4, 12 + cls, 8)
        calls = []
        monkeypatch.setattr('mixedae.models.layers.pos_embed.F.interpolate',
                            lambda *a, **k: calls.append(a))
        bias = attn.relative_position_bias(q.bfloat16(), (4, 3))
        assert bias.dtype == torch.bfloat16 and not calls       # the table's grid: no resize
        monkeypatch.undo()
        torch.testing.assert_close(bias.float(), attn.relative_position_bias(q, (4, 3)),
                                   atol=0.1, rtol=0.02)


@pytest.mark.parametrize('rel_pos_type', ['beit', 'decomposed'])
def test_rel_pos_attention_under_bf16_autocast_keeps_fp32_table_grads(rel_pos_type):
    attn = Attention(32, 4, rel_pos_grid=(4, 4), with_cls_token=False,
                     rel_pos_type=rel_pos_type)
    randomize_rel_pos(attn)
    x = torch.randn(2, 16, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x, (4, 4))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(x, (4, 4)), atol=0.05, rtol=0.05)
    out.float().square().mean().backward()
    for p in attn.parameters():
        assert p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0


# ---------------------------------------------------------------------- decomposed
def test_toeplitz_1d_equals_timms_get_rel_pos():
    for size, rows in ((5, 9), (6, 9), (3, 13)):        # table fits; resized like ViTDet
        table = torch.randn(rows, 4)
        expected = sam.get_rel_pos(size, size, table)
        torch.testing.assert_close(toeplitz_1d(resize_rel_pos_1d(table, 2 * size - 1), size),
                                   expected, **TOL)
    with pytest.raises(ValueError, match='needs 9 rows'):
        toeplitz_1d(torch.zeros(7, 4), 5)


def sam_block(dim, heads, window, input_size):
    return sam.Block(dim, heads, use_rel_pos=True, window_size=window, input_size=input_size,
                     norm_layer=partial(nn.LayerNorm, eps=1e-6), init_values=0.5)


@pytest.mark.parametrize('window,grid', [(0, (4, 4)), (0, (6, 5)), (4, (4, 4)), (4, (6, 5)),
                                         (3, (6, 6))])
def test_decomposed_block_equals_timm_sam_block(window, grid):
    """Global and windowed blocks, the table's grid and another one (padded windows)."""
    attn = with_rel_pos(Attention, (window, window) if window else (4, 4), False, 'decomposed')
    ours = Block(32, 4, window_size=window, init_values=0.5, attn_layer=attn).train()
    ref = sam_block(32, 4, window, (4, 4)).train()
    randomize_rel_pos(ours)
    assert not set(ours.state_dict()) ^ set(ref.state_dict())      # the same parameter names
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, *grid, 32)
    out = ours(x.flatten(1, 2), grid)
    expected = ref(x).flatten(1, 2)
    torch.testing.assert_close(out, expected, **TOL)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **TOL, msg=name)


def vitdet(img_size: int = 64, **kw) -> ViT:
    return ViT(img_size=img_size, patch_size=8, embed_dim=32, depth=4, num_heads=4, init_values=0.5,
               with_cls_token=False, use_rel_pos_bias=True, rel_pos_type='decomposed',
               window_size=3, window_block_indexes=(0, 2), final_norm=False, **kw)


def to_sam_state_dict(model: ViT) -> dict:
    """Our ViTDet backbone's weights in timm's SAM encoder names (only pos_embed differs)."""
    sd = dict(model.state_dict())
    h, w = model.patch_embed.grid_size
    sd['pos_embed'] = sd['pos_embed'].reshape(1, h, w, -1)
    return sd


@pytest.mark.parametrize('size', [(64, 64), (64, 48)])
def test_vitdet_backbone_equals_timm_sam_encoder(size, monkeypatch):
    # the absolute table is resized by plain bicubic, as mmdet's ViTDet does (timm's SAM
    # anti-aliases by default): compare the rest with timm resizing the same way
    resize = sam.resample_abs_pos_embed_nhwc
    monkeypatch.setattr(sam, 'resample_abs_pos_embed_nhwc',
                        lambda pos, new_size: resize(pos, new_size, antialias=False))
    model = vitdet(out_indices=(0, 1, 2, 3)).eval()
    randomize_rel_pos(model)
    ref = sam.VisionTransformerSAM(
        img_size=64, patch_size=8, embed_dim=32, depth=4, num_heads=4, init_values=0.5,
        use_rel_pos=True, window_size=3, global_attn_indexes=(1, 3), neck_chans=0,
        num_classes=0).eval()
    missing, unexpected = ref.load_state_dict(to_sam_state_dict(model), strict=False)
    assert all(k.startswith('neck.') for k in missing) and not unexpected   # after the blocks
    ref_outs = []
    for block in ref.blocks:
        block.register_forward_hook(lambda m, i, o: ref_outs.append(o.permute(0, 3, 1, 2)))
    x = torch.randn(2, 3, *size)
    ref.forward_features(x)
    outs = model(x)
    assert len(outs) == len(ref_outs) == 4
    for i, (o, e) in enumerate(zip(outs, ref_outs)):
        torch.testing.assert_close(o, e, **TOL, msg=f'block {i}')


def test_vitdet_tables_are_zero_initialised_and_per_block_sized():
    model = vitdet()
    for i, block in enumerate(model.blocks):
        side = 3 if i in (0, 2) else 8
        assert block.attn.rel_pos_h.shape == block.attn.rel_pos_w.shape == (2 * side - 1, 8)
        assert block.attn.rel_pos_h.abs().sum() == block.attn.rel_pos_w.abs().sum() == 0
        assert not hasattr(block.attn, 'relative_position_bias_table')


def test_decomposed_needs_no_class_token_and_known_types():
    with pytest.raises(ValueError, match='with_cls_token=False'):
        ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4,
            use_rel_pos_bias=True, rel_pos_type='decomposed')
    with pytest.raises(ValueError, match="unknown rel_pos_type 'swin'"):
        ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4,
            use_rel_pos_bias=True, rel_pos_type='swin')


def test_vitdet_checkpoints_resize_rel_pos_and_mae_ones_keep_them_zero(tmp_path):
    src = vitdet(img_size=48)                       # global tables for a 6x6 grid (11 rows)
    randomize_rel_pos(src)
    model = vitdet()                                # 8x8 grid: 15 rows
    sd = src.state_dict()
    adapted, notes = model.adapt_state_dict(sd, 'src.pth')
    torch.testing.assert_close(adapted['blocks.1.attn.rel_pos_h'],
                               resize_rel_pos_1d(sd['blocks.1.attn.rel_pos_h'], 15))
    torch.testing.assert_close(adapted['blocks.0.attn.rel_pos_w'], sd['blocks.0.attn.rel_pos_w'])
    assert 'resampled blocks.1.attn.rel_pos_h from 11 to 15 rows' in notes
    assert not any('blocks.0.attn.rel_pos' in n for n in notes)   # window tables: same size
    model.load_backbone_state(sd, 'src.pth')
    torch.testing.assert_close(model.blocks[3].attn.rel_pos_w,
                               resize_rel_pos_1d(sd['blocks.3.attn.rel_pos_w'], 15))
    mae = {k: v for k, v in sd.items() if 'rel_pos' not in k}   # an MAE backbone lacks them
    fresh = vitdet()
    fresh.load_backbone_state(mae, 'mae.pth')
    assert all(fresh.blocks[i].attn.rel_pos_h.abs().sum() == 0 for i in range(4))
    torch.testing.assert_close(fresh.blocks[2].mlp.fc1.weight, src.blocks[2].mlp.fc1.weight)


def test_boolean_mask_combines_with_the_bias():
    attn = Attention(32, 4, rel_pos_grid=(3, 3), with_cls_token=True).eval()
    randomize_rel_pos(attn)
    x = torch.randn(2, 10, 32)
    keep = torch.rand(2, 1, 10, 10) > 0.3
    keep[..., 0] = True                                 # every query keeps a key
    additive = torch.zeros(keep.shape).masked_fill(~keep, float('-inf'))
    torch.testing.assert_close(attn(x, (3, 3), attn_mask=keep),
                               attn(x, (3, 3), attn_mask=additive))
    assert not torch.allclose(attn(x, (3, 3), attn_mask=keep), attn(x, (3, 3)))


def test_cls_attention_maps_include_the_beit_bias():
    from mixedae.suite.figures import cls_attention_maps
    vit = ViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
              use_rel_pos_bias=True).eval()
    randomize_rel_pos(vit)
    x = torch.randn(2, 3, 32, 32)
    tokens, grid = vit.prepare_tokens(x)
    block = vit.blocks[1]
    q, k, _ = block.attn.qkv_heads(block.norm1(vit.blocks[0](tokens, grid)))
    logits = q @ k.transpose(-2, -1) * block.attn.head_dim ** -0.5 + gather_bias(
        block.attn.relative_position_bias_table, (4, 4), (4, 4), True)
    expected = logits.softmax(-1)[:, :, 0, 1:].mean(1).reshape(2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(cls_attention_maps(vit, x), expected, **TOL)


def test_toeplitz_names_the_rows_it_got():
    with pytest.raises(ValueError, match=r'^a relative table for 3 positions needs 5 rows, got 4$'):
        toeplitz_1d(torch.zeros(4, 3), 3)
