"""mixedae.datasets.synthetic: the generated scenes (the data set's manifest:
test_synthetic_manifest.py)."""
import numpy as np
import pytest

from mixedae.datasets.synthetic import render_scene, render_scenes


def patch_stats(image):
    """64 x 64 x 3 image -> 64 patches (8 x 8) x 6: mean and std of each channel."""
    patches = image.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
    return np.concatenate([patches.mean(1), patches.std(1)], 1)


def test_scenes_carry_their_own_identity():
    """Patches of one scene are told from those of others by their colour statistics alone:
    the nearest neighbour of a patch comes from its own scene far more often than chance."""
    rng = np.random.default_rng(0)
    feats, owner = [], []
    for i in range(8):
        image, _ = render_scene(rng, 64, 64)
        feats.append(patch_stats(image))                                     # 64 x 6
        owner += [i] * 64
    feats, owner = np.concatenate(feats), np.array(owner)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    accuracy = (owner[dist.argmin(1)] == owner).mean()
    assert accuracy > 0.8                               # chance: 63 / 511 ~ 0.12


def test_scenes_of_a_family_share_their_look():
    """8 families of 4: colour statistics tell the families apart (the nearest patch is of the
    query's family), but within its family far less often the query's own scene than scenes
    with a look each (above: > 0.8)."""
    scenes = render_scenes(np.random.default_rng(0), 32, 64, 64, family=4)
    feats = np.concatenate([patch_stats(image.astype(np.float32)) for image, _ in scenes])
    owner = np.repeat(np.arange(32), 64)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = owner[dist.argmin(1)]
    in_family = nearest // 4 == owner // 4
    assert in_family.mean() > 0.9                                   # chance: 255 / 2047 ~ 0.12
    assert (nearest == owner)[in_family].mean() < 0.6               # chance: 63 / 255 ~ 0.25


def test_render_scenes_counts_families_and_is_seeded():
    first = render_scenes(np.random.default_rng(3), 6, 32, 32, family=4)   # 4 + a family of 2
    again = render_scenes(np.random.default_rng(3), 6, 32, 32, family=4)
    assert len(first) == 6
    for (a, inst_a), (b, inst_b) in zip(first, again):
        assert np.array_equal(a, b) and len(inst_a) == len(inst_b)
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(inst_a, inst_b))
    with pytest.raises(ValueError, match='family must be >= 1'):
        render_scenes(np.random.default_rng(0), 4, 32, 32, family=0)
