"""MixedAE's two losses as pure functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor,
               norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """MAE's reconstruction loss over the masked (not visible) patches only.

    pred, target: B x N x P patch vectors; visible: B x N bool. With ``norm_pix`` each target
    patch is normalised by its own mean and variance.
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    per_patch = (pred - target).pow(2).mean(dim=-1)                    # B x N
    masked = (~visible).to(per_patch.dtype)
    return (per_patch * masked).sum() / masked.sum().clamp(min=1)


def homologous_contrastive(features: torch.Tensor, labels: torch.Tensor,
                           tau: float) -> torch.Tensor:
    """Supervised-contrastive loss with source-image ids as labels, within each sequence.

    features: T x N x C (any scale; L2-normalised here); labels: T x N source ids. For anchor
    n, positives are the other tokens with the same label, the denominator runs over every
    other token of the same sequence:
    L = mean_n [ -1/|P(n)| sum_{m in P(n)} log( exp(s_nm/tau) / sum_{k != n} exp(s_nk/tau) ) ].
    Anchors without positives are left out of the mean.
    """
    f = F.normalize(features.float(), dim=-1)
    logits = f @ f.transpose(1, 2) / tau                               # T x N x N
    n = logits.shape[-1]
    self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float('-inf'))
    log_prob = logits - logits.logsumexp(dim=-1, keepdim=True)
    positives = (labels.unsqueeze(-1) == labels.unsqueeze(-2)) & ~self_mask
    num_pos = positives.sum(-1)                                        # T x N
    pos_log_prob = log_prob.masked_fill(~positives, 0).sum(-1)
    # masked arithmetic, not boolean indexing: no data-dependent shape, so no host sync
    has_pos = (num_pos > 0).to(log_prob.dtype)
    per_anchor = pos_log_prob / num_pos.clamp(min=1)
    return -(per_anchor * has_pos).sum() / has_pos.sum()
