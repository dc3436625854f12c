"""Position tables: BEiT relative layout, relative table and absolute embedding resampling."""
import pytest
import torch

from mixedae.models.layers.pos_embed import (num_relative_entries, resize_pos_embed,
                                            resize_rel_pos_1d, resize_rel_pos_table,
                                            sincos_2d_pos_embed)
from mixedae.models.layers.rel_pos import beit_rel_pos_bias


def relative_position_index(grid, with_cls_token):
    """The table row each query/key pair reads: the bias of a table holding its row numbers."""
    rows = torch.arange(num_relative_entries(grid, with_cls_token), dtype=torch.float64)
    return beit_rel_pos_bias(rows.unsqueeze(1), grid, with_cls_token)[0].long()


@pytest.mark.parametrize('grid', [(3, 3), (2, 4)])
def test_relative_index_depends_only_on_offset(grid):
    h, w = grid
    index = relative_position_index(grid, with_cls_token=False)
    assert index.shape == (h * w, h * w)
    seen = {}
    for i in range(h * w):
        for j in range(h * w):
            offset = (i // w - j // w, i % w - j % w)
            assert seen.setdefault(offset, index[i, j].item()) == index[i, j].item()
    assert len(set(seen.values())) == len(seen)                 # distinct offsets, distinct rows
    assert index.max().item() < num_relative_entries(grid, False)
    assert index[0, 0].item() == (h - 1) * (2 * w - 1) + (w - 1)  # zero offset: the centre


def test_relative_index_class_token_rows():
    index = relative_position_index((2, 2), with_cls_token=True)
    assert index.shape == (5, 5)
    assert index[0, 1:].unique().tolist() == [9]
    assert index[1:, 0].unique().tolist() == [10]
    assert index[0, 0].item() == 11
    torch.testing.assert_close(index[1:, 1:], relative_position_index((2, 2), False))


def test_rel_table_resize_identity_and_structure():
    table = torch.randn(num_relative_entries((3, 3), True), 4)
    assert resize_rel_pos_table(table, (3, 3), (3, 3), True) is table
    big = resize_rel_pos_table(table, (3, 3), (5, 4), True)
    assert big.shape == (num_relative_entries((5, 4), True), 4)
    torch.testing.assert_close(big[-3:], table[-3:])             # class-token rows copied
    src = table[:25].T.reshape(4, 5, 5)
    dst = big[:-3].T.reshape(4, 9, 7)
    torch.testing.assert_close(dst[:, 4, 3], src[:, 2, 2])      # zero offset stays in place
    for (a, b), (c, d) in [((0, 0), (0, 0)), ((0, -1), (0, -1)), ((-1, 0), (-1, 0))]:
        torch.testing.assert_close(dst[:, a, b], src[:, c, d])  # largest offsets stay in place


def test_rel_table_resize_keeps_a_constant_table_constant():
    table = torch.full((num_relative_entries((4, 4), False), 2), 0.5)
    out = resize_rel_pos_table(table, (4, 4), (7, 7), False)
    torch.testing.assert_close(out, torch.full_like(out, 0.5))


def test_rel_table_resize_rejects_wrong_rows():
    with pytest.raises(ValueError, match='expected 28'):
        resize_rel_pos_table(torch.zeros(27, 2), (3, 3), (4, 4), True)


def test_abs_pos_embed_resize_non_square():
    pos = torch.randn(1, 1 + 16, 8)
    out = resize_pos_embed(pos, (4, 4), (3, 6), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 18, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    assert resize_pos_embed(pos, (4, 4), (4, 4), 1) is pos
    with pytest.raises(ValueError, match='expected 16'):
        resize_pos_embed(pos, (4, 4), (2, 2), num_prefix_tokens=0)


def test_rel_table_resize_beit_224_to_512():
    # a ViT-B/16 table pretrained at 224 (14x14) used at 512 (32x32)
    table = torch.randn(num_relative_entries((14, 14), True), 12)
    out = resize_rel_pos_table(table, (14, 14), (32, 32), True)
    assert out.shape == (63 * 63 + 3, 12)
    assert torch.isfinite(out).all()


def test_relative_entries_by_hand():
    # offsets (2h - 1) x (2w - 1), plus cls->token, token->cls and cls->cls with a class token
    assert num_relative_entries((2, 3), False) == 15
    assert num_relative_entries((2, 3), True) == 18


def test_non_square_rel_pos_table_keeps_corners_centre_and_class_rows():
    """A (2, 3) window's table resampled to (3, 4): offset grid 3 x 5 -> 5 x 7, its corners and
    centre (zero offset) unchanged, the three class-token rows copied, the dtype kept."""
    table = torch.randn(3 * 5 + 3, 2, dtype=torch.float64)
    out = resize_rel_pos_table(table, (2, 3), (3, 4), with_cls_token=True)
    assert out.shape == (5 * 7 + 3, 2) and out.dtype == torch.float64
    assert torch.equal(out[-3:], table[-3:])
    src, dst = table[:15].T.reshape(2, 3, 5), out[:35].T.reshape(2, 5, 7)
    rows, cols = [0, 0, -1, -1], [0, -1, 0, -1]
    torch.testing.assert_close(dst[:, rows, cols], src[:, rows, cols])
    torch.testing.assert_close(dst[:, 2, 3], src[:, 1, 2])
    with pytest.raises(ValueError, match=r'table has 7 rows, expected 18 for grid \(2, 3\)'):
        resize_rel_pos_table(torch.zeros(7, 2), (2, 3), (3, 4), with_cls_token=True)


def test_rel_pos_1d_keeps_the_dtype():
    table = torch.randn(7, 3, dtype=torch.float64)
    out = resize_rel_pos_1d(table, 13)
    assert out.shape == (13, 3) and out.dtype == torch.float64
    assert resize_rel_pos_1d(table, 7) is table


def test_non_square_pos_embed_is_resampled_from_its_own_grid():
    """A 2 x 3 grid (and a class token) to 4 x 6: the class entry is kept, each row of the
    result interpolates the source's rows (a column-constant source stays column-constant)."""
    rows = torch.arange(2.).view(1, 2, 1, 1).expand(1, 2, 3, 8).reshape(1, 6, 8)
    src = torch.cat([torch.full((1, 1, 8), 7.), rows], dim=1)
    out = resize_pos_embed(src, (2, 3), (4, 6), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 24, 8) and torch.equal(out[:, :1], src[:, :1])
    grid = out[0, 1:].view(4, 6, 8)
    assert torch.allclose(grid, grid[:, :1])                # constant along each row
    assert grid[0, 0, 0] < grid[-1, 0, 0]                   # and increasing down the rows
    with pytest.raises(ValueError, match=r'^pos_embed has 5 entries, expected 7 for grid '
                                         r'\(2, 3\) with 1 prefix tokens$'):
        resize_pos_embed(torch.zeros(1, 5, 8), (2, 3), (4, 6), num_prefix_tokens=1)


def test_sincos_needs_a_dim_divisible_by_4():
    with pytest.raises(ValueError, match=r'^sin-cos position embedding needs dim % 4 == 0, '
                                         r'got 6$'):
        sincos_2d_pos_embed(6, (2, 2))
