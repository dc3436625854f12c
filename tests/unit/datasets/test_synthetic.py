"""mixedae.datasets.synthetic: the generated scenes (the data set's manifest:
test_synthetic_manifest.py)."""
import numpy as np

from mixedae.datasets.synthetic import render_scene


def test_scenes_carry_their_own_identity():
    """Patches of one scene are told from those of others by their colour statistics alone:
    the nearest neighbour of a patch comes from its own scene far more often than chance."""
    rng = np.random.default_rng(0)
    feats, owner = [], []
    for i in range(8):
        image, _ = render_scene(rng, 64, 64)
        patches = image.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
        feats.append(np.concatenate([patches.mean(1), patches.std(1)], 1))   # 64 x 6
        owner += [i] * 64
    feats, owner = np.concatenate(feats), np.array(owner)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    accuracy = (owner[dist.argmin(1)] == owner).mean()
    assert accuracy > 0.8                               # chance: 63 / 511 ~ 0.12
