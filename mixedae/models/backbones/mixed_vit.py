"""The pretraining encoder: ``mixedae.ViT`` plus what MAE / MixedAE pretraining adds.

Its parameters are those of :class:`~mixedae.models.backbones.vit.ViT` plus ``segment_embed``
(G x D), so the trained encoder loads into the transfer backbone with prefix changes only
(``tools/convert_checkpoint.py --src-format mixedae``). The position embedding is MAE's fixed
2-D sine-cosine table and the initialisation is MAE's (``tests/parity/test_mae_parity.py``).
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import to_2tuple, trunc_normal_

from mixedae.registry import MODELS
from ..layers.homologous_attention import HomologousAttention, MixingContext
from ..utils.mixing import mix
from .vit import ViT


def default_topk(num_patches: int, group_size: int) -> int:
    """Keys kept per query when ``topk`` is not given: one image's share of a mixed sequence
    plus one, N/G + 1 (50 for ViT-B/16 at 224 px with G = 4)."""
    return num_patches // group_size + 1


@MODELS.register_module()
class MixedViT(ViT):
    """ViT encoder for MixedAE (G >= 2) and MAE (G = 1) pretraining.

    Args:
        group_size: G, images mixed into one sequence (1 = MAE, no mixing).
        attn_mode: ``topk`` (homologous attention), ``vanilla`` or ``oracle``.
        homologous_layers: ``'all'``, ``'last_half'`` or block indices that use ``attn_mode``;
            the other blocks attend over the whole mixed sequence.
        topk: keys kept per query in ``topk`` mode; default N/G + 1 (one image's share).
        use_segment_embed: add a learned embedding of the source image to every token.
        attn_impl: top-K attention implementation: ``auto`` (the fused Triton kernel on CUDA,
            eager PyTorch elsewhere), ``triton`` or ``reference``.
        tied_qk_init: start the key projection of each homologous layer as a copy of its query
            projection, so that its logits begin as a similarity kernel (q.k = q.q', positive
            semi-definite: tokens alike, such as a query and its own image's tokens, score
            high). With MAE's independent initialisation the sign of that kernel is random,
            and at small scale a layer can settle on keeping the tokens *unlike* the query,
            below chance (docs/method.md, "Homologous recognition at demo scale").
        img_size, patch_size, depth: as in :class:`ViT` (and its defaults); they set the number
            of patches N that ``group_size`` and ``topk`` are checked against.
        **kwargs: the other architecture arguments of :class:`ViT` (embed_dim, num_heads, ...).
    """

    def __init__(self, group_size: int = 4, attn_mode: str = 'topk',
                 homologous_layers: Union[str, Sequence[int]] = 'all',
                 topk: Optional[int] = None, use_segment_embed: bool = True,
                 attn_impl: str = 'auto', tied_qk_init: bool = False,
                 img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16,
                 depth: int = 12, **kwargs) -> None:
        for fixed in ('with_cls_token', 'use_abs_pos_embed', 'window_size', 'use_rel_pos_bias',
                      'rel_pos_type', 'attn_layer', 'init_mode'):
            if fixed in kwargs:
                raise ValueError(f'MixedViT does not take {fixed!r} (pretraining uses a class '
                                 'token, fixed absolute positions, homologous attention and '
                                 'MAE\'s initialisation)')
        img_size = to_2tuple(img_size)
        grid = [s // p for s, p in zip(img_size, to_2tuple(patch_size))]
        num_patches = grid[0] * grid[1]                                # timm's PatchEmbed grid
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f'group_size must be a positive integer, got {group_size!r}')
        if num_patches % group_size:
            raise ValueError(f'group_size {group_size} does not divide the {num_patches} patches '
                             f'of a {img_size} image')
        topk = default_topk(num_patches, group_size) if topk is None else topk
        if not 1 <= topk <= num_patches + group_size:
            raise ValueError(f'topk must be in [1, {num_patches + group_size}] (tokens of a mixed '
                             f'sequence), got {topk}')
        homologous = self._resolve_layers(homologous_layers, depth)
        super().__init__(img_size=img_size, patch_size=patch_size, depth=depth, attn_layer=[
            partial(HomologousAttention, mode=attn_mode if i in homologous else 'vanilla',
                    topk=topk, impl=attn_impl) for i in range(depth)], **kwargs)
        self.group_size = group_size
        self.attn_mode = attn_mode
        self.topk = topk
        self.homologous_layers = homologous
        self.segment_embed = (nn.Parameter(torch.zeros(group_size, self.embed_dim))
                              if use_segment_embed and group_size > 1 else None)
        if self.segment_embed is not None:
            trunc_normal_(self.segment_embed, std=.02)
        self.pos_embed.requires_grad_(False)
        self._init_mae()
        if tied_qk_init:
            self._tie_qk_init()

    @torch.no_grad()
    def _tie_qk_init(self) -> None:
        """Copy the query rows of each homologous layer's ``qkv`` into its key rows."""
        d = self.embed_dim
        for i in self.homologous_layers:
            qkv = self.blocks[i].attn.qkv                              # rows: q, k, v (D each)
            qkv.weight[d:2 * d] = qkv.weight[:d]
            if qkv.bias is not None:
                qkv.bias[d:2 * d] = qkv.bias[:d]

    @classmethod
    def _resolve_layers(cls, layers: Union[str, Sequence[int]], depth: int) -> Tuple[int, ...]:
        if layers == 'all':
            return tuple(range(depth))
        if layers == 'last_half':
            return tuple(range(depth // 2, depth))
        if isinstance(layers, str):
            raise ValueError(f"homologous_layers must be 'all', 'last_half' or indices, got "
                             f'{layers!r}')
        indices = tuple(cls._check_indices(list(layers), depth))
        if not indices:
            raise ValueError("homologous_layers is empty: for plain attention in every block "
                             "set attn_mode='vanilla'")
        return indices

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W (the pretraining size) -> B x N x D patch tokens with positions."""
        x = self.patch_embed(images)
        b, h, w, d = x.shape
        if (h, w) != tuple(self.patch_embed.grid_size):
            raise ValueError(f'pretraining images must be {self.patch_embed.img_size}, got '
                             f'{tuple(images.shape[-2:])}')
        return x.reshape(b, h * w, d) + self.pos_embed[:, 1:]

    def class_tokens(self, n: int) -> torch.Tensor:
        """n x 1 x D class tokens with their position entry."""
        return (self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1)

    def encode_masked(self, images: torch.Tensor, visible_ids: torch.Tensor) -> torch.Tensor:
        """MAE encoder: B x 3 x H x W and kept positions B x K -> B x (1 + K) x D."""
        patches = self.embed_patches(images)
        visible = patches.gather(1, visible_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        x = torch.cat([self.class_tokens(len(images)), visible], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def encode_mixed(self, images: torch.Tensor, assign: torch.Tensor, groups: torch.Tensor
                     ) -> Tuple[torch.Tensor, MixingContext]:
        """MixedAE encoder.

        images: B x 3 x H x W (B = S*G); assign: T x N sources; groups: T group of each
        sequence. Returns T x (G + N) x D (the G class tokens first, in source order) and the
        attention context (with the homologous-recognition precisions of the topk layers).
        """
        g = self.group_size
        patches = mix(self.embed_patches(images), assign, groups, g)    # T x N x D
        t = patches.shape[0]
        sources = torch.arange(g, device=assign.device)
        cls = self.class_tokens(t * g).reshape(t, g, -1)                # T x G x D
        if self.segment_embed is not None:
            patches = patches + self.segment_embed[assign]
            cls = cls + self.segment_embed
        x = torch.cat([cls, patches], dim=1)                           # T x (G+N) x D
        labels = torch.cat([sources.expand(t, g), assign], dim=1)      # T x (G+N)
        context = MixingContext(labels, num_prefix=g)
        for block in self.blocks:
            x = block(x, context=context)
        return self.norm(x), context
