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

import math
import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import PatchEmbed, trunc_normal_
from timm.models import named_apply
from timm.models.vision_transformer import init_weights_vit_timm

from mixedae.registry import MODELS
from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, state_dict_of
from ..layers.attention import Attention
from ..layers.block import Block, LayerNorm
from ..layers.pos_embed import (Grid, num_relative_entries, resize_pos_embed, resize_rel_pos_1d,
                                resize_rel_pos_table)

#: parameters a checkpoint may lack: they keep their initial value (zero relative positions,
#: as in BEiT/MAE fine-tuning and ViTDet; layer scale at ``init_values``).
EXPECTED_MISSING = re.compile(
    r'^blocks\.\d+\.(attn\.(relative_position_bias_table|rel_pos_[hw])|ls[12]\.gamma)$')


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
        attn_layer: the attention module of the blocks (one for all, or one per block), as
            timm's ``Block`` takes it; pretraining encoders install theirs through it.
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
                 with_cp: bool = False,
                 attn_layer: Union[Callable[..., nn.Module], Sequence[Callable[..., nn.Module]]]
                 = Attention, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.depth = depth
        self.embed_dim = embed_dim
        self.out_indices = self._check_indices(out_indices, depth)
        self.final_norm = final_norm
        self.with_cls_token = with_cls_token
        self.num_prefix_tokens = int(with_cls_token)
        self.with_cp = with_cp
        window_blocks = set(self._check_indices(list(window_block_indexes), depth))
        if window_blocks and not window_size:
            raise ValueError('window_block_indexes given but window_size is 0')
        if window_size and with_cls_token:
            raise ValueError('window attention needs with_cls_token=False (ViTDet drops it)')
        self._check_pretrained(init_cfg)

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
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                  dpr[i], init_values, window_size if i in window_blocks else 0,
                  grid if use_rel_pos_bias else None, with_cls_token,
                  rel_pos_type=rel_pos_type, attn_layer=attn_layers[i])
            for i in range(depth)])
        self.norm = LayerNorm(embed_dim) if final_norm else nn.Identity()
        self._init_random()

    @staticmethod
    def _check_indices(indices: Union[int, Sequence[int]], depth: int) -> List[int]:
        indices = [indices] if isinstance(indices, int) else list(indices)
        out = []
        for i in indices:
            if not -depth <= i < depth:
                raise ValueError(f'block index {i} out of range for depth {depth}')
            out.append(i % depth)
        return out

    @staticmethod
    def _check_pretrained(init_cfg: Optional[dict]) -> None:
        """Fail at model build time (before any data is read) on a missing checkpoint."""
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            path = init_cfg.get('checkpoint')
            if not path or not os.path.isfile(os.path.expanduser(str(path))):
                raise FileNotFoundError(
                    f'model.backbone.init_cfg.checkpoint: checkpoint file not found: {path!r}')

    def _init_random(self) -> None:
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        named_apply(init_weights_vit_timm, self)

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
        """Fit a backbone state dict to this model's configuration.

        Resamples the position embedding and relative position tables (BEiT's bicubically,
        ViTDet's ``rel_pos_h/w`` linearly, as ViTDet does) to this model's grids, and drops the
        class token / position embedding / final norm when this model has none. Returns the new
        dict and a list of human-readable notes of what was changed.
        """
        sd = dict(state_dict)
        notes = []
        grid = self.patch_embed.grid_size
        if 'pos_embed' in sd:
            if self.pos_embed is None:
                del sd['pos_embed']
                notes.append('dropped pos_embed (use_abs_pos_embed=False)')
            else:
                pos = sd['pos_embed']
                src_prefix, src_grid = _infer_pos_layout(pos.shape[1], source)
                if src_prefix and not self.with_cls_token:
                    pos = pos[:, src_prefix:]
                    notes.append('dropped the class-token entry of pos_embed')
                elif self.with_cls_token and not src_prefix:
                    raise CheckpointError(f'{source}: pos_embed has no class-token entry but the '
                                          'model uses a class token')
                sd['pos_embed'] = resize_pos_embed(pos, src_grid, grid, self.num_prefix_tokens)
                if tuple(src_grid) != tuple(grid):
                    notes.append(f'resampled pos_embed from grid {src_grid} to {tuple(grid)}')
        if not self.final_norm and any(k.startswith('norm.') for k in sd):
            sd = {k: v for k, v in sd.items() if not k.startswith('norm.')}
            notes.append('dropped the final norm (final_norm=False)')
        if 'cls_token' in sd and self.cls_token is None:
            del sd['cls_token']
            notes.append('dropped cls_token (with_cls_token=False)')
        for i, block in enumerate(self.blocks):
            attn = block.attn
            if not attn.rel_pos_grid:
                continue
            key = f'blocks.{i}.attn.relative_position_bias_table'
            if key in sd and attn.rel_pos_type == 'beit':
                src = _infer_rel_pos_grid(sd[key].shape[0], attn.with_cls_token, source, key)
                sd[key] = resize_rel_pos_table(sd[key], src, attn.rel_pos_grid, attn.with_cls_token)
                if src != attn.rel_pos_grid:
                    notes.append(f'resampled {key} from grid {src} to {attn.rel_pos_grid}')
            for axis, size in zip('hw', attn.rel_pos_grid):
                key = f'blocks.{i}.attn.rel_pos_{axis}'
                if key in sd and attn.rel_pos_type == 'decomposed':
                    src_len = sd[key].shape[0]
                    sd[key] = resize_rel_pos_1d(sd[key], 2 * size - 1)
                    if src_len != 2 * size - 1:
                        notes.append(f'resampled {key} from {src_len} to {2 * size - 1} rows')
        return sd, notes

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> None:
        """Load a backbone checkpoint file (``prefix``: keep and strip keys with it)."""
        sd = state_dict_of(load_checkpoint_file(path), path)
        if prefix:
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise CheckpointError(f'{path}: no keys start with prefix {prefix!r}')
        self.load_backbone_state(sd, path)

    def load_backbone_state(self, state_dict: Dict[str, torch.Tensor], source: str) -> None:
        """Load backbone weights; raise unless every key matches or is expected-missing, and
        log a key report."""
        sd, notes = self.adapt_state_dict(state_dict, source)
        self._check_architecture(sd, source)
        missing, unexpected = self.load_state_dict(sd, strict=False)
        expected_missing = [k for k in missing if EXPECTED_MISSING.match(k)]
        bad_missing = [k for k in missing if not EXPECTED_MISSING.match(k)]
        if bad_missing or unexpected:
            raise CheckpointError(
                f'{source} does not fit mixedae.ViT: missing keys {bad_missing}, unexpected '
                f'keys {unexpected}. Convert it first with tools/convert_checkpoint.py.')
        report = [f'loaded {len(sd)} tensors from {source}']
        report += notes
        if expected_missing:
            report.append(f'{len(expected_missing)} tensors kept at their initial value '
                          f'(absent from the checkpoint, expected): '
                          f'{_summarize_keys(expected_missing)}')
        print_log('mixedae.ViT: ' + '; '.join(report), logger='current')

    def _check_architecture(self, sd: Dict[str, torch.Tensor], source: str) -> None:
        """One error naming both architectures when the checkpoint is another ViT size (instead
        of one size-mismatch or missing-key message per tensor)."""
        own = self.state_dict()
        wrong = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
        if not wrong and _depth(sd) in (0, len(self.blocks)):
            return
        detail = (f'{wrong[0]} is {tuple(sd[wrong[0]].shape)} in the checkpoint and '
                  f'{tuple(own[wrong[0]].shape)} in the model ({len(wrong)} tensors differ)'
                  if wrong else f'the checkpoint has {_depth(sd)} blocks, the model '
                  f'{len(self.blocks)}')
        raise CheckpointError(
            f'{source} does not match the config: {detail}. The checkpoint is a ViT with '
            f'{_architecture(sd)}, the config builds {_architecture(own)}; use the config made '
            'for this checkpoint (e.g. a tiny config for the demo checkpoints).')


def _depth(sd: Dict[str, torch.Tensor]) -> int:
    """Number of transformer blocks in a backbone state dict."""
    return len({k.split('.')[1] for k in sd if k.startswith('blocks.')})


def _architecture(sd: Dict[str, torch.Tensor]) -> str:
    """'embed_dim 64, patch 8x8, depth 4' of a backbone state dict."""
    parts = []
    if 'patch_embed.proj.weight' in sd:
        w = sd['patch_embed.proj.weight']  # D x C x P x P
        parts += [f'embed_dim {w.shape[0]}', f'patch {w.shape[2]}x{w.shape[3]}']
    return ', '.join(parts + [f'depth {_depth(sd)}'])


def _infer_pos_layout(num_tokens: int, source: str) -> Tuple[int, Grid]:
    """(prefix tokens, square grid) of a checkpoint position embedding with ``num_tokens``."""
    for prefix in (0, 1):
        side = math.isqrt(num_tokens - prefix)
        if side * side == num_tokens - prefix:
            return prefix, (side, side)
    raise CheckpointError(f'{source}: pos_embed with {num_tokens} entries is not a square grid')


def _infer_rel_pos_grid(rows: int, with_cls_token: bool, source: str, key: str) -> Grid:
    side = (math.isqrt(rows - (3 if with_cls_token else 0)) + 1) // 2
    if num_relative_entries((side, side), with_cls_token) != rows:
        raise CheckpointError(f'{source}: {key} has {rows} rows, not a square-window table')
    return side, side


def _summarize_keys(keys: List[str]) -> str:
    """Collapse per-block keys: 'blocks.{0..11}.attn.relative_position_bias_table'."""
    groups: Dict[str, List[str]] = {}
    for k in keys:
        m = re.match(r'^blocks\.(\d+)\.(.*)$', k)
        if m:
            groups.setdefault(m.group(2), []).append(m.group(1))
        else:
            groups.setdefault(k, [])
    return ', '.join(f'blocks.{{{",".join(ids)}}}.{name}' if ids else name
                     for name, ids in groups.items())
