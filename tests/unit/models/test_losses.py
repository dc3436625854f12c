"""Reconstruction and homologous contrastive losses against direct implementations."""
import math

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from mixedae.models.losses import homologous_contrastive, masked_mse
from mixedae.models.utils.patches import patchify, unpatchify


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 16, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 6, 192)
    # patch (row 1, col 2) is the pixel block [8:16, 16:24], stored as (p, q, c)
    torch.testing.assert_close(p[:, 1 * 3 + 2].view(2, 8, 8, 3),
                               x[:, :, 8:16, 16:24].permute(0, 2, 3, 1))
    torch.testing.assert_close(unpatchify(p, 8, (2, 3)), x)


def test_masked_mse_only_counts_masked_patches():
    pred, target = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    visible = torch.tensor([[True, False, False, True], [False, True, True, True]])
    loss = masked_mse(pred, target, visible, norm_pix=False)
    manual = [((pred[b, n] - target[b, n]) ** 2).mean() for b in range(2) for n in range(4)
              if not visible[b, n]]
    torch.testing.assert_close(loss, torch.stack(manual).mean())
    pred2 = pred.clone()
    pred2[visible] += 100.0                      # visible patches do not matter
    torch.testing.assert_close(masked_mse(pred2, target, visible, norm_pix=False), loss)


def test_masked_mse_norm_pix():
    target = torch.randn(1, 3, 12) * 5 + 2
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    visible = torch.zeros(1, 3, dtype=torch.bool)
    assert masked_mse(norm, target, visible, norm_pix=True).item() < 1e-10


def loop_contrastive(features, labels, tau):
    """Direct per-anchor statement of L_hc."""
    f = torch.nn.functional.normalize(features, dim=-1)
    losses = []
    for t in range(f.shape[0]):
        for a in range(f.shape[1]):
            others = [k for k in range(f.shape[1]) if k != a]
            pos = [m for m in others if labels[t, m] == labels[t, a]]
            if not pos:
                continue
            denom = sum(math.exp(float(f[t, a] @ f[t, k]) / tau) for k in others)
            losses.append(-sum(math.log(math.exp(float(f[t, a] @ f[t, m]) / tau) / denom)
                               for m in pos) / len(pos))
    return sum(losses) / len(losses)


def test_contrastive_matches_per_anchor_loop():
    features = torch.randn(2, 9, 5, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1, 2, 2, 2]])
    ours = homologous_contrastive(features, labels, 0.25)
    assert abs(ours.item() - loop_contrastive(features, labels, 0.25)) < 1e-5


def test_contrastive_rewards_clustering_by_source():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(8).view(1, 32)
    centers = torch.randn(4, 16, generator=g)
    clustered = centers[labels] + 0.1 * torch.randn(1, 32, 16, generator=g)
    shuffled = labels[:, torch.randperm(32, generator=g)]
    assert homologous_contrastive(clustered, labels, 0.25) < \
        homologous_contrastive(clustered, shuffled, 0.25) - 1.0


def test_contrastive_with_unbalanced_labels_matches_the_loop():
    """Sources of different sizes and an anchor without positives (left out of the mean):
    with balanced labels, summing over the wrong axis gives the same number."""
    features = torch.randn(2, 7, 5, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 2], [3, 1, 1, 1, 0, 0, 1]])
    ours = homologous_contrastive(features, labels, 0.5)
    assert abs(ours.item() - loop_contrastive(features, labels, 0.5)) < 1e-5


class RecordOps(TorchDispatchMode):
    """Records each aten op and whether any of its tensor arguments is boolean."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        bool_arg = any(isinstance(a, torch.Tensor) and a.dtype == torch.bool
                       for a in pytree.tree_leaves((args, kwargs)))
        self.ops.append((func.overloadpacket.__name__, bool_arg))
        return func(*args, **(kwargs or {}))


def test_contrastive_has_no_data_dependent_shapes():
    """No boolean-mask indexing or nonzero (their output shape depends on the data: a host sync
    per step on GPU); same value as the loop, with an anchor without positives left out."""
    features = torch.randn(2, 7, 5, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 2], [3, 1, 1, 1, 0, 0, 1]])
    with RecordOps() as record:
        ours = homologous_contrastive(features, labels, 0.5)
    assert abs(ours.item() - loop_contrastive(features, labels, 0.5)) < 1e-5
    assert ('sum', False) in record.ops                    # the mode saw the loss's ops
    synced = [op for op in record.ops if op[0] in ('nonzero', 'masked_select')
              or op == ('index', True)]
    assert not synced
