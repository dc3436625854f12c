"""MixedAE's homologous attention: the attention plug-in ``MixedViT`` puts into its blocks.

Its parameters are exactly those of :class:`~.attention.Attention` (``qkv``, ``proj``), so a
pretrained encoder loads into the transfer ViT unchanged. What differs is which keys a query
of a mixed sequence may use (``ATTN_MODES``):

- ``topk``: each query keeps the keys with its K largest logits (ties at the K-th all kept),
  softmax over those only (:func:`~.topk_attention.topk_attention`: a fused Triton kernel on
  CUDA, eager PyTorch elsewhere).
- ``vanilla``: plain attention over the whole mixed sequence (the naive-mixing baseline).
- ``oracle``: attention restricted to tokens of the query's own source image.

Without a :class:`MixingContext` (MAE, G = 1) it is plain attention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F

from .attention import Attention
from .pos_embed import Grid
from .topk_attention import IMPLS, topk_attention

ATTN_MODES = ('topk', 'vanilla', 'oracle')


@dataclass
class MixingContext:
    """What the attention layers of one forward pass need to know about the mixing.

    labels: T x N' source id of every token of each sequence (class tokens included).
    num_prefix: prefix (class) tokens at the start of each sequence (G in MixedAE).
    precisions: filled by ``topk`` layers with the homologous-recognition accuracy ``hr_acc``
    (:func:`~.topk_attention.homologous_precision`: among the patch keys other than itself that
    a patch query keeps, the fraction from the query's image), one scalar per layer.
    """
    labels: torch.Tensor
    num_prefix: int
    precisions: List[torch.Tensor] = field(default_factory=list)
    _same: Optional[torch.Tensor] = field(default=None, repr=False)

    def same_source(self) -> torch.Tensor:
        """T x 1 x N' x N' boolean: query and key come from the same source image."""
        if self._same is None:
            self._same = (self.labels.unsqueeze(-1) == self.labels.unsqueeze(-2)).unsqueeze(1)
        return self._same


class HomologousAttention(Attention):
    """Attention over a mixed sequence with keys selected per ``mode``.

    Args:
        mode: ``topk``, ``vanilla`` or ``oracle``.
        topk: keys kept per query in ``topk`` mode (its bounds depend on the sequence length:
            checked by the encoder that builds the layer, ``MixedViT``).
        impl: ``auto`` (Triton kernel on CUDA when available), ``triton`` or ``reference``.

    ``record_precision`` (default True): ``topk`` layers add their precision (``hr_acc``) to
    the context; ``MixedAE.set_hr_acc`` switches it off on iterations that do not log it.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., mode: str = 'topk', topk: int = 1,
                 impl: str = 'auto') -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if mode not in ATTN_MODES:
            raise ValueError(f'unknown attention mode {mode!r}; choose from {ATTN_MODES}')
        if impl not in IMPLS:
            raise ValueError(f'unknown attention impl {impl!r}; choose from {IMPLS}')
        self.mode = mode
        self.topk = topk
        self.impl = impl
        self.record_precision = True   # topk mode: append hr_acc's precision to the context

    def forward(self, x: torch.Tensor, grid: Optional[Grid] = None,
                context: Optional[MixingContext] = None) -> torch.Tensor:
        """x: T x N' x C mixed sequences (or B x N x C unmixed ones when ``context`` is None);
        ``grid`` is the block's attention contract (:class:`~.block.Block`): a mixed sequence
        has no token grid, and this attention has no relative positions to place on one."""
        q, k, v = self.qkv_heads(x)                                    # each T x heads x N' x hd
        dropout_p = self.attn_drop if self.training else 0.
        if context is None or self.mode == 'vanilla':
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        elif self.mode == 'oracle':
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=context.same_source(),
                                                 dropout_p=dropout_p)
        else:
            labels = context.labels if self.record_precision else None
            out, precision = topk_attention(q, k, v, self.topk, labels, dropout_p,
                                            impl=self.impl, num_prefix=context.num_prefix)
            if precision is not None:
                context.precisions.append(precision)
        return self.merge_heads(out)
