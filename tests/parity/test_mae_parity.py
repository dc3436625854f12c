"""MAE = MixedAE with the switches off (G = 1, no contrastive loss), checked against MAE itself.

The reference pieces below restate the official MAE release (facebookresearch/mae,
``util/pos_embed.py`` and ``models_mae.py``) independently and briefly: the 2-D sin-cos table,
``random_masking`` by per-sample noise argsort, the norm-pix loss on masked patches, the
encoder / decoder forward and the weight initialisation rules.
"""
import math
import os
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from mixedae.models import MixedAE
from mixedae.models.layers.pos_embed import sincos_2d_pos_embed
from mixedae.registry import MODELS
from support import ROOT

PRETRAIN = os.path.join(ROOT, 'configs', 'pretrain')


# ------------------------------------------------------------------ MAE's reference pieces
def ref_sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1. / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.))
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def ref_sincos_2d(dim: int, h: int, w: int, cls_token: bool) -> torch.Tensor:
    """MAE's get_2d_sincos_pos_embed: meshgrid(grid_w, grid_h), so grid[0] is the column."""
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
    emb = np.concatenate([ref_sincos_1d(dim // 2, grid[0]), ref_sincos_1d(dim // 2, grid[1])],
                         axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def ref_random_masking(x: torch.Tensor, mask_ratio: float):
    n, length, d = x.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, device=x.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    x_kept = x.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(n, length)
    mask[:, :keep] = 0
    return x_kept, mask.gather(1, ids_restore), ids_restore


class RefMAE(nn.Module):
    """MAE's MaskedAutoencoderViT forward (names as the release, so a state dict maps 1:1)."""

    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, decoder_embed_dim,
                 decoder_depth, decoder_num_heads):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.p = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, 4., qkv_bias=True,
                                           norm_layer=norm) for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, 4.,
                                                   qkv_bias=True, norm_layer=norm)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * 3)
        side = int(n ** .5)
        self.register_buffer('decoder_pos_embed',
                             ref_sincos_2d(decoder_embed_dim, side, side, True), persistent=False)

    def patchify(self, imgs):
        b, _, h, w = imgs.shape
        x = imgs.reshape(b, 3, h // self.p, self.p, w // self.p, self.p)
        return torch.einsum('nchpwq->nhwpqc', x).reshape(b, -1, self.p ** 2 * 3)

    def forward(self, imgs, mask_ratio=0.75):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x, mask, ids_restore = ref_random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        masks = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:], masks], dim=1)
        x_ = x_.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        target = self.patchify(imgs)                      # norm_pix_loss=True
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


def build_mae(config: str) -> MixedAE:
    cfg = Config.fromfile(os.path.join(PRETRAIN, config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # other tests may set one
        return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def mae_base() -> MixedAE:
    torch.manual_seed(0)
    return build_mae('mae_vit-base-p16_8xb512-coslr-300e_in1k.py')


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize('dim,grid', [(768, (14, 14)), (16, (3, 5)), (8, (4, 2))])
def test_sincos_table_equals_mae(dim, grid):
    ours = sincos_2d_pos_embed(dim, grid, num_prefix_tokens=1)
    # bit for bit: both compute in float64 and round once to float32 (a float32 frequency
    # vector, say, differs in the last bits)
    torch.testing.assert_close(ours, ref_sincos_2d(dim, *grid, cls_token=True), rtol=0, atol=0)


def test_sincos_first_half_is_the_column_second_half_the_row():
    h, w, dim = 3, 5, 16
    table = sincos_2d_pos_embed(dim, (h, w))[0].view(h, w, dim)
    first, second = table[..., :dim // 2], table[..., dim // 2:]
    # first half: constant down each column, varies along a row; second half: the converse
    torch.testing.assert_close(first, first[:1].expand(h, -1, -1))
    torch.testing.assert_close(second, second[:, :1].expand(-1, w, -1))
    assert not torch.allclose(first[:, 0], first[:, 1])
    assert not torch.allclose(second[0], second[1])
    # a table that encoded the row twice would not match MAE's
    rows_twice = torch.cat([second, second], dim=-1).reshape(1, h * w, dim)
    assert not torch.allclose(rows_twice, ref_sincos_2d(dim, h, w, cls_token=False))


def test_mae_config_is_mixedae_with_the_switches_off(mae_base):
    model = mae_base
    assert model.group_size == 1 and model.contrast_head is None
    assert model.mask_ratio == 0.75 and model.norm_pix_loss
    assert model.backbone.segment_embed is None
    enc, dec = model.backbone, model.decoder
    assert (enc.embed_dim, enc.depth, enc.blocks[0].attn.num_heads) == (768, 12, 12)
    assert (dec.decoder_embed.out_features, len(dec.decoder_blocks)) == (512, 8)
    assert dec.decoder_blocks[0].attn.num_heads == 16
    torch.testing.assert_close(enc.pos_embed, ref_sincos_2d(768, 14, 14, cls_token=True))
    torch.testing.assert_close(dec.decoder_pos_embed, ref_sincos_2d(512, 14, 14, cls_token=True))
    assert not enc.pos_embed.requires_grad


def _check_xavier(weight: torch.Tensor, name: str) -> None:
    fan_out, fan_in = weight.shape
    bound = math.sqrt(6. / (fan_in + fan_out))
    assert weight.abs().max() <= bound, name
    assert abs(weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.05, name


def test_mae_initialisation_rules(mae_base):
    model = mae_base
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 12 * 4 + 8 * 4 + 2        # encoder, decoder blocks, embed and pred
    for name, m in linears:
        _check_xavier(m.weight, name)
        assert torch.count_nonzero(m.bias) == 0, name
    proj = model.backbone.patch_embed.proj.weight
    _check_xavier(proj.view(proj.shape[0], -1), 'patch_embed.proj (as a Linear)')
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            assert m.eps == 1e-6, name
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.count_nonzero(m.bias) == 0, name
    for token in (model.backbone.cls_token, model.decoder.mask_token):
        assert abs(token.std().item() / 0.02 - 1) < 0.15 and abs(token.mean().item()) < 0.005


def test_mae_loss_equals_the_reference_from_the_same_seed_and_weights():
    ours = build_mae('mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
    enc, dec = ours.backbone, ours.decoder
    ref = RefMAE(32, 8, enc.embed_dim, enc.depth, enc.blocks[0].attn.num_heads,
                 dec.decoder_embed.out_features, len(dec.decoder_blocks),
                 dec.decoder_blocks[0].attn.num_heads)
    # the official release's names: our state dict loads with the prefixes stripped
    weights = {k.split('.', 1)[1]: v for k, v in ours.state_dict().items()}
    ref.load_state_dict(weights, strict=True)
    torch.testing.assert_close(ref.pos_embed, ref_sincos_2d(enc.embed_dim, 4, 4, True))
    images = torch.randn(6, 3, 32, 32)
    for seed in (0, 1):
        torch.manual_seed(seed)
        loss_ours = ours.loss(images)['loss_rec']
        torch.manual_seed(seed)
        loss_ref = ref(images, mask_ratio=0.75)
        torch.testing.assert_close(loss_ours, loss_ref, rtol=1e-5, atol=1e-6)
    # the masking itself: the same kept positions as MAE's noise argsort
    torch.manual_seed(3)
    kept = ours.sample_visibility(6, torch.device('cpu'))[0]
    torch.manual_seed(3)
    _, mask, _ = ref_random_masking(torch.zeros(6, 16, 1), 0.75)
    assert torch.equal((mask == 0).nonzero()[:, 1].view(6, 4), kept)


def test_pretraining_weight_decay_is_maes(mae_base):
    """MAE's main_pretrain: timm's add_weight_decay(model, 0.05) with no skip list."""
    cfg = Config.fromfile(os.path.join(PRETRAIN, 'mae_vit-base-p16_8xb512-coslr-300e_in1k.py'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(mae_base, cfg.optim_wrapper)
    where = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    trainable = {n: p for n, p in mae_base.named_parameters() if p.requires_grad}
    assert len(where) == len(trainable) and 'backbone.pos_embed' not in trainable
    for name, param in trainable.items():
        no_decay = param.ndim == 1 or name.endswith('.bias')
        assert where[id(param)]['weight_decay'] == (0. if no_decay else 0.05), name
        assert where[id(param)]['lr'] == cfg.optim_wrapper.optimizer.lr, name
    assert where[id(mae_base.backbone.cls_token)]['weight_decay'] == 0.05


def test_pretraining_recipe_is_maes():
    """MAE's main_pretrain.py / paper (appendix A.1), restated: AdamW (0.9, 0.95), wd 0.05,
    blr 1.5e-4 scaled by batch / 256 at batch 4096, 40 warm-up epochs then cosine to 0,
    RandomResizedCrop(224, scale=(0.2, 1.0), bicubic) + horizontal flip, ImageNet mean/std."""
    cfg = Config.fromfile(os.path.join(PRETRAIN, 'mae_vit-base-p16_8xb512-coslr-300e_in1k.py'))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, tuple(opt.betas), opt.weight_decay) == ('AdamW', (0.9, 0.95), 0.05)
    batch = cfg.train_dataloader.batch_size * 8
    assert batch == 4096 == cfg.auto_scale_lr.base_batch_size
    assert opt.lr == pytest.approx(1.5e-4 * batch / 256)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end, warmup.by_epoch) == ('LinearLR', 0, 40, True)
    assert (cosine.type, cosine.begin, cosine.eta_min) == ('CosineAnnealingLR', 40, 0.0)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based   # per iteration
    load, crop, flip, _ = cfg.train_pipeline
    assert (crop.size, tuple(crop.scale), crop.interpolation) == (224, (0.2, 1.0), 'bicubic')
    assert (flip.type, flip.prob, flip.direction) == ('RandomFlip', 0.5, 'horizontal')
    pre = cfg.model.data_preprocessor
    assert pre.mean == [0.485 * 255, 0.456 * 255, 0.406 * 255]
    assert pre.std == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
    assert cfg.train_dataloader.drop_last
