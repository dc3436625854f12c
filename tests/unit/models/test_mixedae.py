"""MixedAE pretraining invariants (docs/method.md)."""
import pytest
import torch

from mixedae.models import MixedAE, MixedViT, ViT
from mixedae.models.backbones.checkpoint_layouts import convert_checkpoint
from mixedae.models.utils.mixing import owned_positions, sample_assignment, unmix
from support import TINY

# 32x32 images, 8x8 patches: N = 16 patches; G = 4 -> 4 visible patches per image (MAE's 25%)
DECODER = dict(type='mixedae.MAEDecoder', decoder_embed_dim=16, depth=1, num_heads=2)


def backbone(**kw):
    return dict(type='mixedae.MixedViT', **TINY, **kw)


def build(g=4, attn_mode='topk', seg=True, lam=0.1, **kw):
    return MixedAE(backbone=backbone(group_size=g, attn_mode=attn_mode, use_segment_embed=seg),
                   decoder=DECODER, contrast_weight=lam, **kw)


def test_oracle_mixing_equals_mae_on_the_same_visible_patches():
    mixed = build(g=4, attn_mode='oracle', seg=False, lam=0.0).eval()
    mae = build(g=1, seg=False, lam=0.0).eval()
    assert mae.load_state_dict(mixed.state_dict()) is not None
    images = torch.randn(8, 3, 32, 32)
    assign = sample_assignment(2, 16, 4)
    visible_ids = owned_positions(assign, 4).reshape(8, 4)
    rec_mixed = mixed.loss_mixed(images, assign, torch.arange(2))['loss_rec']
    rec_mae = mae.loss_masked(images, visible_ids)['loss_rec']
    torch.testing.assert_close(rec_mixed, rec_mae, atol=1e-5, rtol=1e-5)
    # and the encoder outputs themselves: oracle = each image encoded on its own
    latent, _ = mixed.backbone.encode_mixed(images, assign, torch.arange(2))
    alone = mae.backbone.encode_masked(images, visible_ids)            # 8 x (1 + 4) x D
    torch.testing.assert_close(latent[:, :4].reshape(8, 32), alone[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmix(latent[:, 4:], assign, 4), alone[:, 1:],
                               atol=1e-5, rtol=1e-5)


def test_topk_with_all_keys_equals_vanilla():
    topk = MixedViT(**TINY, group_size=4, attn_mode='topk', topk=16 + 4).eval()
    vanilla = MixedViT(**TINY, group_size=4, attn_mode='vanilla').eval()
    vanilla.load_state_dict(topk.state_dict())
    images = torch.randn(8, 3, 32, 32)
    assign = sample_assignment(2, 16, 4)
    a, ctx = topk.encode_mixed(images, assign, torch.arange(2))
    b, _ = vanilla.encode_mixed(images, assign, torch.arange(2))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(ctx.precisions) == 2


def test_topk_restricts_attention_and_reports_precision():
    model = build(g=4)
    assert model.backbone.topk == 16 // 4 + 1
    losses = model.loss(torch.randn(8, 3, 32, 32))
    assert set(losses) == {'loss_rec', 'loss_hc', 'hr_acc'}
    assert 0.0 <= losses['hr_acc'].item() <= 1.0
    topk = MixedViT(**TINY, group_size=4, topk=5).eval()
    full = MixedViT(**TINY, group_size=4, attn_mode='vanilla').eval()
    full.load_state_dict(topk.state_dict())
    images, assign = torch.randn(4, 3, 32, 32), sample_assignment(1, 16, 4)
    assert not torch.allclose(topk.encode_mixed(images, assign, torch.arange(1))[0],
                              full.encode_mixed(images, assign, torch.arange(1))[0])


def test_full_mode_reconstructs_every_image_g_times():
    model = build(g=2, mix_mode='full')
    assign, groups = model.sample_visibility(4, torch.device('cpu'))
    assert assign.shape == (4, 16) and groups.tolist() == [0, 0, 1, 1]
    losses = model.loss(torch.randn(4, 3, 32, 32))
    assert torch.isfinite(losses['loss_rec']) and torch.isfinite(losses['loss_hc'])


def test_segment_embeddings_are_added_per_source():
    with_seg = MixedViT(**TINY, group_size=4, attn_mode='oracle').eval()
    without = MixedViT(**TINY, group_size=4, attn_mode='oracle', use_segment_embed=False).eval()
    without.load_state_dict({k: v for k, v in with_seg.state_dict().items()
                             if k != 'segment_embed'})
    images, assign = torch.randn(4, 3, 32, 32), sample_assignment(1, 16, 4)
    with torch.no_grad():
        with_seg.segment_embed.zero_()
    torch.testing.assert_close(with_seg.encode_mixed(images, assign, torch.arange(1))[0],
                               without.encode_mixed(images, assign, torch.arange(1))[0])


def test_tied_qk_init_copies_query_into_key_rows_of_homologous_layers_only():
    torch.manual_seed(0)
    plain = MixedViT(**TINY, group_size=4, homologous_layers=[1])
    torch.manual_seed(0)
    tied = MixedViT(**TINY, group_size=4, homologous_layers=[1], tied_qk_init=True)
    d = TINY['embed_dim']
    reference = plain.state_dict()
    differ = {k for k, v in tied.state_dict().items() if not torch.equal(v, reference[k])}
    assert differ == {'blocks.1.attn.qkv.weight'}          # zero biases are equal anyway
    w = tied.blocks[1].attn.qkv.weight
    torch.testing.assert_close(w[d:2 * d], w[:d], atol=0, rtol=0)      # keys = queries
    torch.testing.assert_close(w[2 * d:], plain.blocks[1].attn.qkv.weight[2 * d:], atol=0, rtol=0)
    assert not torch.equal(tied.blocks[0].attn.qkv.weight[d:2 * d],
                           tied.blocks[0].attn.qkv.weight[:d])
    # so every head's logits start as a Gram matrix: symmetric, positive semi-definite
    x = torch.randn(2, 20, d)
    for model, psd in ((tied, True), (plain, False)):
        q, k, _ = model.blocks[1].attn.qkv_heads(x)                    # 2 x heads x 20 x hd
        logits = q @ k.transpose(-2, -1)
        assert torch.allclose(logits, logits.transpose(-2, -1), atol=1e-5) == psd
        assert bool((torch.linalg.eigvalsh((logits + logits.transpose(-2, -1)) / 2).min(-1)
                     .values > -1e-4).all()) == psd


@pytest.mark.parametrize('kwargs,match', [
    (dict(mix_mode='half'), 'unknown mix_mode'),
    (dict(contrast_tau=0.0), 'contrast_tau'),
])
def test_invalid_algorithm_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(group_size=3), 'does not divide the 16 patches'),
    (dict(topk=0), 'topk must be in'),
    (dict(topk=21), 'topk must be in'),
    (dict(attn_mode='sparse'), 'unknown attention mode'),
    (dict(homologous_layers='first'), 'homologous_layers'),
    (dict(homologous_layers=[5]), 'out of range'),
])
def test_invalid_encoder_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixedViT(**TINY, **kwargs)


def test_contrast_needs_mixing_and_batches_must_fit_groups():
    with pytest.raises(ValueError, match='needs mixing'):
        build(g=1, lam=0.1)
    with pytest.raises(ValueError, match='a batch of 6 images'):
        build(g=4).loss(torch.randn(6, 3, 32, 32))


def test_a_few_steps_lower_the_loss():
    """Smoke test only: the computations are guarded by value tests (test_references.py)."""
    model = build(g=2, norm_pix_loss=False).train()
    optim = torch.optim.AdamW(model.parameters(), lr=5e-3)
    smooth = torch.nn.functional.interpolate(torch.randn(4, 3, 4, 4), size=32, mode='bilinear')
    images = smooth / smooth.std()
    torch.manual_seed(0)
    first = None
    for step in range(30):
        torch.manual_seed(step % 3)      # a few fixed mixings, so the loss is comparable
        loss = sum(v for k, v in model.loss(images).items() if k.startswith('loss'))
        first = loss.item() if first is None else first
        optim.zero_grad()
        loss.backward()
        optim.step()
    torch.manual_seed(0)
    final = sum(v for k, v in model.loss(images).items() if k.startswith('loss')).item()
    assert final < 0.8 * first


def test_pretrained_encoder_converts_and_loads_into_transfer_vit(tmp_path):
    model = build(g=4).eval()
    torch.save(dict(meta=dict(iter=1), state_dict=model.state_dict()), tmp_path / 'pre.pth')
    convert_checkpoint(str(tmp_path / 'pre.pth'), str(tmp_path / 'vit.pth'), 'mixedae')
    vit = ViT(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
    vit.init_weights()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(vit.eval()(x)[0], model.backbone(x)[0])
