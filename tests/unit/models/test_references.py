"""Core computations against short, obviously-correct restatements (loops, small shapes)."""
import json

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.structures import SegDataSample

from mixedae.suite.results import collect, read_metrics
from mixedae.models import MixedViT, ViT
from mixedae.models.necks.mae_decoder import MAEDecoder
from mixedae.models.layers.pos_embed import sincos_2d_pos_embed
from mixedae.models.losses import masked_mse
from mixedae.models.utils.mixing import (full_mode_assignment, mix, owned_positions,
                                         random_masking, sample_assignment, unmix, visible_mask)
from mixedae.models.utils.patches import patchify
from support import TINY, load_tool

# a fixed, non-trivial assignment: S=2 groups, G=2 sources, N=6 positions, 3 each
ASSIGN = torch.tensor([[1, 0, 0, 1, 1, 0],
                       [0, 0, 1, 1, 0, 1]])


def loop_mix(patches, assign, groups, g):
    t, n = assign.shape
    return torch.stack([torch.stack([patches[groups[i] * g + assign[i, j], j] for j in range(n)])
                        for i in range(t)])


def loop_unmix(tokens, assign, g):
    rows = []
    for i in range(assign.shape[0]):
        for src in range(g):
            rows.append(torch.stack([tokens[i, j] for j in range(assign.shape[1])
                                     if assign[i, j] == src]))
    return torch.stack(rows)


def test_mix_and_unmix_against_loops():
    g = 2
    patches = torch.randn(4, 6, 5)
    groups = torch.tensor([0, 1])
    mixed = mix(patches, ASSIGN, groups, g)
    assert torch.equal(mixed, loop_mix(patches, ASSIGN, groups, g))
    assert torch.equal(unmix(mixed, ASSIGN, g), loop_unmix(mixed, ASSIGN, g))
    # the round trip: row s*G + j of unmix holds exactly image s*G + j's patches at its positions
    back = unmix(mixed, ASSIGN, g)
    for s in range(2):
        for j in range(g):
            own = [n for n in range(6) if ASSIGN[s, n] == j]
            assert torch.equal(back[s * g + j], patches[s * g + j, own])
    # written out by hand for the first sequence
    assert unmix(torch.arange(6.).view(1, 6, 1), ASSIGN[:1], g).flatten().tolist() == \
        [1., 2., 5., 0., 3., 4.]


def test_full_mode_assignment_by_hand():
    full, groups = full_mode_assignment(ASSIGN, 2)
    assert full.tolist() == [[1, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1],
                             [0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 0]]
    assert groups.tolist() == [0, 0, 1, 1]
    # G = 3: sequence j takes position n from image (assign + j) mod 3
    full, _ = full_mode_assignment(torch.tensor([[0, 2, 1]]), 3)
    assert full.tolist() == [[0, 2, 1], [1, 0, 2], [2, 1, 0]]


def test_owned_positions_are_increasing_on_long_sequences():
    """N = 64: long enough for an unstable sort to reorder equal keys."""
    assign = sample_assignment(3, 64, 4)
    owned = owned_positions(assign, 4)
    for t in range(3):
        for src in range(4):
            assert owned[t, src].tolist() == [n for n in range(64) if assign[t, n] == src]


def test_random_draws_follow_the_given_generator():
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        torch.rand(7)                                  # the global generator moves on
        draws.append((sample_assignment(2, 8, 2, generator=g), random_masking(2, 8, 0.5,
                                                                                generator=g)))
    assert all(torch.equal(a, b) for a, b in zip(*draws))
    with pytest.raises(ValueError, match=r'8 patches cannot be split evenly among 3 images'):
        sample_assignment(1, 8, 3)


def test_masking_edge_cases():
    assert random_masking(2, 5, 0.0).tolist() == [list(range(5))] * 2   # ratio 0 keeps all
    mask = visible_mask(torch.tensor([[0, 3], [1, 2], [4, 0]]), 5)      # B = 3, K = 2
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, False, True, False], [False, True, True, False, False],
                             [True, False, False, False, True]]


def test_masked_mse_by_hand():
    target = torch.tensor([[[1., 3.], [2., 2.], [0., 4.]]])          # B=1, N=3, P=2
    pred = torch.zeros(1, 3, 2)
    visible = torch.tensor([[True, True, False]])                      # one masked patch
    assert masked_mse(pred, target, visible, norm_pix=False).item() == pytest.approx(8.0)
    # per-patch normalisation is the default; a flat patch (variance 0) normalises to 0
    flat = torch.tensor([[[2., 2.], [1., 3.]]])
    loss = masked_mse(torch.zeros(1, 2, 2), flat, torch.tensor([[False, True]]))
    assert loss.item() == pytest.approx(0.0)
    normed = masked_mse(torch.zeros(1, 2, 2), flat, torch.tensor([[True, False]]))
    assert normed.item() == pytest.approx(1 / (2 + 1e-6), rel=1e-6)    # unbiased var 2


def test_patchify_needs_both_sides_divisible():
    for size in [(16, 12), (12, 16)]:
        with pytest.raises(ValueError, match=r'image size .* is not divisible by patch size 8'):
            patchify(torch.zeros(1, 3, *size), 8)


def test_each_token_gets_its_own_sources_segment_embedding():
    g = 4
    model = MixedViT(**TINY, group_size=g, attn_mode='vanilla').eval()
    with torch.no_grad():
        model.segment_embed.copy_(torch.randn(g, TINY['embed_dim']))   # distinct, non-zero
    captured = {}
    model.blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(x=args[0]), with_kwargs=True)
    images = torch.randn(8, 3, 32, 32)
    assign = torch.stack([torch.arange(16) % g, torch.arange(16).flip(0) // 4])
    groups = torch.tensor([1, 0])
    with torch.no_grad():
        model.encode_mixed(images, assign, groups)
        patches = model.patch_embed(images).flatten(1, 2)                  # B x N x D
    pos, cls, seg = model.pos_embed[0], model.cls_token[0, 0], model.segment_embed
    for t in range(2):
        for j in range(g):
            torch.testing.assert_close(captured['x'][t, j], cls + pos[0] + seg[j])
        for n in range(16):
            src = assign[t, n].item()
            expected = patches[groups[t] * g + src, n] + pos[1 + n] + seg[src]
            torch.testing.assert_close(captured['x'][t, g + n], expected)


def test_drop_path_rate_rises_linearly_with_depth():
    model = ViT(**dict(TINY, depth=5), drop_path_rate=0.2)
    for i, block in enumerate(model.blocks):
        expected = 0.2 * i / 4
        for drop in (block.drop_path1, block.drop_path2):
            assert getattr(drop, 'drop_prob', 0.0) == pytest.approx(expected), i


def test_mae_decoder_against_a_restatement():
    grid, d = (2, 3), 8
    dec = MAEDecoder(num_patches=6, grid=grid, patch_size=2, in_chans=1, embed_dim=4,
                     decoder_embed_dim=d, depth=1, num_heads=2).eval()
    table = dec.decoder_pos_embed
    assert torch.equal(table, sincos_2d_pos_embed(d, grid, num_prefix_tokens=1))
    assert table.shape == (1, 7, d) and table[0, 1:].std(0).min() > 0   # varies with position
    tokens = torch.randn(2, 3, 4)                      # class token + 2 visible patches
    visible = torch.tensor([[4, 1], [0, 5]])
    with torch.no_grad():
        out = dec(tokens, visible)
        for r in range(2):
            emb = dec.decoder_embed(tokens[r])
            seq = [emb[0]] + [dec.mask_token[0, 0]] * 6
            for k, n in enumerate(visible[r].tolist()):
                seq[1 + n] = emb[1 + k]
            x = torch.stack(seq)[None] + table
            for block in dec.decoder_blocks:
                x = block(x)
            expected = dec.decoder_pred(dec.decoder_norm(x))[0, 1:]
            torch.testing.assert_close(out[r], expected)


def test_known_miou_reaches_the_benchmark_table_in_percent(tmp_path):
    """IoU of class 0 = 2/3, class 1 = 3/4 -> mIoU 70.83 %, through mmseg's metric,
    tools/test.py's metrics file and the benchmark table."""
    gt = torch.tensor([[[0, 0, 0, 1, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 1, 1, 1]]])  # class 0: |{0,1}| / |{0,1,2}| = 2/3; class 1: 3/4
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=('a', 'b'))
    sample = SegDataSample(pred_sem_seg=PixelData(data=pred), gt_sem_seg=PixelData(data=gt))
    metric.process({}, [sample.to_dict()])
    metrics = metric.compute_metrics(metric.results)
    expected = round(100 * (2 / 3 + 3 / 4) / 2, 2)               # 70.83
    assert metrics['mIoU'] == pytest.approx(expected)
    path = tmp_path / 'metrics.json'
    load_tool('test').write_metrics(metrics, str(path))
    assert read_metrics(str(path))['mIoU'] == pytest.approx(expected)
    assert json.loads(path.read_text())['mIoU'] == pytest.approx(expected)
    row, = collect([dict(method='m', task='ade20k', metrics=str(path), scale='')])
    assert row['ADE20K mIoU'] == '70.83'
