"""Mixing invariants: balanced assignment, mix/unmix round trip, full mode coverage."""
import pytest
import torch

from mixedae.models.utils.mixing import (full_mode_assignment, mix, owned_positions,
                                         random_masking, sample_assignment, unmix, visible_mask)


def labelled_patches(b, n, d=3):
    """Patch (i, n) carries the values (i, n, i*n) so every token knows where it came from."""
    i = torch.arange(b).view(b, 1).expand(b, n).float()
    j = torch.arange(n).view(1, n).expand(b, n).float()
    return torch.stack([i, j, i * j], dim=-1)[..., :d]


@pytest.mark.parametrize('g', [2, 3, 4])
def test_assignment_is_balanced(g):
    assign = sample_assignment(5, 12, g)
    assert assign.shape == (5, 12)
    counts = torch.stack([(assign == k).sum(1) for k in range(g)], 1)
    assert (counts == 12 // g).all()


def test_assignment_rejects_indivisible():
    with pytest.raises(ValueError, match='N % G'):
        sample_assignment(2, 10, 3)


@pytest.mark.parametrize('g', [2, 4])
def test_compose_mix_uses_every_patch_once_and_unmix_returns_own_patches(g):
    s, n = 3, 16
    patches = labelled_patches(s * g, n)
    assign = sample_assignment(s, n, g)
    groups = torch.arange(s)
    mixed = mix(patches, assign, groups, g)                          # S x N x 3
    for t in range(s):
        for pos in range(n):
            src = t * g + assign[t, pos].item()
            assert mixed[t, pos].tolist() == patches[src, pos].tolist()
    back = unmix(mixed, assign, g)                                    # B x N/G x 3
    ids = owned_positions(assign, g).reshape(s * g, n // g)
    assert back.shape == (s * g, n // g, 3)
    torch.testing.assert_close(back, patches.gather(1, ids.unsqueeze(-1).expand(-1, -1, 3)))
    assert (back[:, :, 0] == torch.arange(s * g).view(-1, 1)).all()   # each row its own image
    assert (ids.diff(dim=1) > 0).all()                                # increasing positions
    # the images' visible sets partition each group's positions
    owned = torch.zeros(s, n, dtype=torch.long)
    for row in range(s * g):
        owned[row // g].index_add_(0, ids[row], torch.ones(n // g, dtype=torch.long))
    assert (owned == 1).all()


def test_full_mode_shows_every_patch_of_every_image_once():
    s, g, n = 2, 4, 8
    assign = sample_assignment(s, n, g)
    full, groups = full_mode_assignment(assign, g)
    assert full.shape == (s * g, n) and groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    patches = labelled_patches(s * g, n)
    mixed = mix(patches, full, groups, g)                             # S*G x N x 3
    seen = torch.zeros(s * g, n, dtype=torch.long)
    for t in range(s * g):
        for pos in range(n):
            seen[int(mixed[t, pos, 0]), pos] += 1
    assert (seen == 1).all()
    back = unmix(mixed, full, g)                                      # (S*G*G) x N/G x 3
    images = groups.repeat_interleave(g) * g + torch.arange(g).repeat(s * g)
    assert (back[:, :, 0] == images.view(-1, 1).float()).all()


def test_random_masking_and_visible_mask():
    ids = random_masking(4, 16, 0.75)
    assert ids.shape == (4, 4)
    assert (ids.diff(dim=1) > 0).all()
    mask = visible_mask(ids, 16)
    assert mask.sum(1).tolist() == [4] * 4
    assert mask.gather(1, ids).all()
    with pytest.raises(ValueError, match='mask_ratio'):
        random_masking(1, 4, 1.0)
