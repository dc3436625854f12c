"""The transfer ViT backbone, ``mixedae.ViT``.

Built from timm's layers with timm's parameter names (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}``, ``norm``),
so MAE, iBOT, timm and mixedae pretraining checkpoints load with prefix changes only (see
``tools/convert_checkpoint.py``). Adds what dense prediction needs: multi-level NCHW outputs,
position-embedding interpolation to any input size, relative positions (BEiT's bias tables or
ViTDet's decomposed ones), layer scale, ViTDet window attention, gradient checkpointing and
``get_layer_depth`` for layer-wise lr decay.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from timm.layers import PatchEmbed, trunc_normal_
from timm.models import named_apply
from timm.models.vision_transformer import init_weights_vit_timm

from mixedae.registry import MODELS
from ..layers.attention import Attention
from ..layers.block import Block, LayerNorm
from ..layers.pos_embed import Grid, resize_pos_embed, sincos_2d_pos_embed
from . import loading

#: the random initialisations of :class:`ViT` (``init_mode``)
INIT_MODES = ('timm', 'mae')


def with_rel_pos(attn_layer: Callable[..., nn.Module], grid: Grid, with_cls_token: bool,
                 rel_pos_type: str) -> Callable[..., nn.Module]:
    """``attn_layer`` with relative positions of ``rel_pos_type`` for a ``grid`` of tokens
    (one window's in a windowed block) bound in: the block's attention contract
    (:class:`~mixedae.models.layers.block.Block`) stays the same with or without them."""
    return partial(attn_layer, rel_pos_grid=tuple(grid), with_cls_token=with_cls_token,
                   rel_pos_type=rel_pos_type)


@MODELS.register_module()
class ViT(BaseModule):
    """Plain ViT backbone for dense prediction.

    Args:
        img_size: training input size; sets the stored position-embedding grid. Inputs of any
            other size are handled by resampling the position embedding (and relative tables).
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: as in timm.
        drop_rate, attn_drop_rate, drop_path_rate: dropout / stochastic depth (linear rule).
        out_indices: blocks whose outputs are returned as B x C x H/p x W/p maps.
        final_norm: apply the final LayerNorm to the last block's output.
        with_cls_token: prepend a class token (must be off with window attention, as in ViTDet).
        use_abs_pos_embed: learnable absolute position embedding.
        use_rel_pos_bias: per-block relative positions, zero-initialised, of type
            ``rel_pos_type``: ``'beit'`` (BEiT's query-independent bias table, one row per
            offset and head) or ``'decomposed'`` (ViTDet/SAM: ``rel_pos_h`` / ``rel_pos_w``,
            the query-dependent bias ``q · R_h + q · R_w``; needs ``with_cls_token=False``).
            Windowed blocks' tables span one window, global blocks' the ``img_size`` grid.
        init_values: layer-scale initial value (None: no layer scale).
        window_size / window_block_indexes: ViTDet window attention in the listed blocks;
            the other blocks attend globally.
        with_cp: gradient checkpointing of every block during training.
        frozen: a fixed feature extractor (the linear probe): no parameter requires grad and
            the model stays in eval mode (no dropout or drop path) whatever ``train()`` asks,
            as mmseg's ``frozen_stages`` / ``norm_eval`` do for their stages and norms.
        attn_layer: the attention module of the blocks (one for all, or one per block), built
            as :class:`~mixedae.models.layers.block.Block` builds it (timm's ``Block``'s
            contract; ``use_rel_pos_bias`` binds its relative-position options in first);
            pretraining encoders install theirs through it.
        init_mode: the random initialisation: ``'timm'`` (timm's ViT: truncated-normal
            position table and Linears) or ``'mae'`` (MAE's, which every pretraining here
            starts from: fixed 2-D sin-cos values in the (still learnable) position table,
            xavier-uniform Linears and patch projection, zero biases; chosen here for the
            random-init floor, so it starts where the pretrained encoders started).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH[, prefix=...])`` loads a backbone
            checkpoint (see ``tools/convert_checkpoint.py``) with a checked key report.
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16,
                 in_chans: int = 3, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.,
                 out_indices: Union[int, Sequence[int]] = -1, final_norm: bool = True,
                 with_cls_token: bool = True, use_abs_pos_embed: bool = True,
                 use_rel_pos_bias: bool = False, rel_pos_type: str = 'beit',
                 init_values: Optional[float] = None,
                 window_size: int = 0, window_block_indexes: Sequence[int] = (),
                 with_cp: bool = False, frozen: bool = False,
                 attn_layer: Union[Callable[..., nn.Module], Sequence[Callable[..., nn.Module]]]
                 = Attention, init_mode: str = 'timm', init_cfg: Optional[dict] = None
                 ) -> None:
        super().__init__(init_cfg=init_cfg)
        if init_mode not in INIT_MODES:
            raise ValueError(f'init_mode must be one of {INIT_MODES}, got {init_mode!r}')
        self.depth = depth
        self.embed_dim = embed_dim
        self.out_indices = self._check_indices(out_indices, depth)
        self.final_norm = final_norm
        self.with_cls_token = with_cls_token
        self.num_prefix_tokens = int(with_cls_token)
        self.with_cp = with_cp
        self.frozen = frozen
        window_blocks = set(self._check_indices(list(window_block_indexes), depth))
        if window_blocks and not window_size:
            raise ValueError('window_block_indexes given but window_size is 0')
        if window_size and with_cls_token:
            raise ValueError('window attention needs with_cls_token=False (ViTDet drops it)')

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim,
                                      output_fmt='NHWC', strict_img_size=False,
                                      dynamic_img_pad=True)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(
            1, self.num_prefix_tokens + grid[0] * grid[1], embed_dim)) if use_abs_pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        attn_layers = list(attn_layer) if isinstance(attn_layer, Sequence) else [attn_layer] * depth
        if len(attn_layers) != depth:
            raise ValueError(f'{len(attn_layers)} attention layers given for {depth} blocks')
        windows = [window_size if i in window_blocks else 0 for i in range(depth)]
        if use_rel_pos_bias:   # a windowed block's relative positions span one window
            attn_layers = [with_rel_pos(layer, (w, w) if w else grid, with_cls_token,
                                        rel_pos_type) for layer, w in zip(attn_layers, windows)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                  dpr[i], init_values, windows[i], attn_layer=attn_layers[i])
            for i in range(depth)])
        self.norm = LayerNorm(embed_dim) if final_norm else nn.Identity()
        self._init_random()
        if init_mode == 'mae':
            self._init_mae()
        self.requires_grad_(not frozen)
        self.train()

    def train(self, mode: bool = True) -> 'ViT':
        """``nn.Module.train``; a frozen model stays in eval mode."""
        return super().train(mode and not self.frozen)

    @staticmethod
    def _check_indices(indices: Union[int, Sequence[int]], depth: int) -> List[int]:
        indices = [indices] if isinstance(indices, int) else list(indices)
        out = []
        for i in indices:
            if not -depth <= i < depth:
                raise ValueError(f'block index {i} out of range for depth {depth}')
            out.append(i % depth)
        return out

    def _init_random(self) -> None:
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        named_apply(init_weights_vit_timm, self)

    @torch.no_grad()
    def _init_mae(self) -> None:
        """MAE's ``initialize_weights``: fixed sin-cos positions, xavier-uniform patch projection
        (viewed as a Linear) and Linears with zero biases, LayerNorm 1/0, normal(0.02) class
        token. The projection's bias keeps PyTorch's Conv2d default, as in MAE."""
        if self.pos_embed is not None:
            self.pos_embed.copy_(sincos_2d_pos_embed(self.embed_dim, self.patch_embed.grid_size,
                                                     num_prefix_tokens=self.num_prefix_tokens))
        proj = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- forward
    def prepare_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid]:
        """Images B x 3 x H x W -> tokens B x (P + h*w) x D (class token first) and (h, w)."""
        x = self.patch_embed(x)                                        # B x h x w x D
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        prefix = self.cls_token.expand(b, -1, -1) if self.cls_token is not None else None
        if self.pos_embed is not None:
            pos = resize_pos_embed(self.pos_embed, self.patch_embed.grid_size, (h, w),
                                   self.num_prefix_tokens)
            x = x + pos[:, self.num_prefix_tokens:]
            if prefix is not None:
                prefix = prefix + pos[:, :self.num_prefix_tokens]
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)
        return self.pos_drop(x), (h, w)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: B x 3 x H x W -> one B x D x ceil(H/p) x ceil(W/p) map per ``out_indices``."""
        x, (h, w) = self.prepare_tokens(x)
        outs = []
        for i, block in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, (h, w), use_reentrant=False)
            else:
                x = block(x, (h, w))
            if i == self.depth - 1:
                x = self.norm(x)
            if i in self.out_indices:
                patches = x[:, self.num_prefix_tokens:]
                outs.append(patches.transpose(1, 2).reshape(x.shape[0], -1, h, w).contiguous())
        return tuple(outs)

    # ------------------------------------------------------- layer-wise decay
    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """(layer id, number of layers) of a parameter for layer-wise lr decay.

        Embeddings are layer 0, block i is layer i + 1, the final norm is the last layer
        (``depth + 1``); anything else in the backbone also counts as the last layer.
        """
        num_layers = self.depth + 2
        name = param_name[len(prefix):] if prefix and param_name.startswith(prefix) else param_name
        if name in ('cls_token', 'pos_embed') or name.startswith('patch_embed.'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------ pretrained loading
    def init_weights(self) -> None:
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self.load_pretrained(self.init_cfg['checkpoint'], self.init_cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor], source: str
                         ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """:func:`~.loading.adapt_state_dict` for this model."""
        return loading.adapt_state_dict(self, state_dict, source)

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> None:
        """:func:`~.loading.load_pretrained` into this model."""
        loading.load_pretrained(self, path, prefix)

    def load_backbone_state(self, state_dict: Dict[str, torch.Tensor], source: str) -> None:
        """:func:`~.loading.load_backbone_state` into this model."""
        loading.load_backbone_state(self, state_dict, source)
