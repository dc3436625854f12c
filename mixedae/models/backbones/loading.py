"""Loading backbone weights into a ``mixedae.ViT``: fitting a state dict to the model (position
embeddings and relative position tables resampled to its grids, entries it has no place for
dropped), one error for a checkpoint of another architecture, and a checked key report; and
the one way a config asks for it (:func:`set_backbone_checkpoint`).

Which keys a backbone checkpoint holds, and how release layouts become them, is
:mod:`.checkpoint_layouts`; the model is passed in (duck-typed as the ``nn.Module`` that
``ViT`` is: ``patch_embed``, ``pos_embed``, ``cls_token``, ``blocks``, ...), so this module
does not import the model that imports it.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, state_dict_of
from mixedae.utils.errors import InvalidInputError
from mixedae.utils.key_report import describe_keys, summarize_keys
from ..layers.pos_embed import (Grid, num_relative_entries, resize_pos_embed, resize_rel_pos_1d,
                                resize_rel_pos_table)
from .checkpoint_layouts import FORMATS, OPTIONAL_KEY, require_converted, source_format

StateDict = Dict[str, torch.Tensor]


def backbone_init_cfg(checkpoint: str) -> Dict[str, str]:
    """The ``model.backbone.init_cfg`` that starts the backbone from the backbone checkpoint
    ``checkpoint`` (a file of ``tools/convert_checkpoint.py``), loaded by ``ViT.init_weights``
    through :func:`load_pretrained`.

    Whether the file exists is checked once, with every other input of the run, by the tools'
    input check (``check_inputs_exist``: ``model.backbone.init_cfg.checkpoint: checkpoint file
    not found: PATH``) before the model is built; a checkpoint that a later job writes (the
    suite's runs) need not exist when it is set.
    """
    return dict(type='Pretrained', checkpoint=checkpoint)


def set_backbone_checkpoint(cfg: Config, checkpoint: str) -> None:
    """Start ``cfg``'s backbone from ``checkpoint`` (:func:`backbone_init_cfg`, replacing any
    ``init_cfg`` it had); a config without a ``model.backbone`` is refused in one line."""
    if not isinstance(cfg.get('model', {}).get('backbone'), dict):
        raise InvalidInputError(f'{cfg.filename} has no model.backbone to load the backbone '
                                f'checkpoint {checkpoint} into')
    cfg.model.backbone.init_cfg = backbone_init_cfg(checkpoint)


def backbone_checkpoint_options(checkpoint: str) -> Dict[str, str]:
    """:func:`backbone_init_cfg` as ``--cfg-options`` entries, for a command line."""
    return {f'model.backbone.init_cfg.{k}': v for k, v in backbone_init_cfg(checkpoint).items()}


def adapt_state_dict(model: nn.Module, state_dict: StateDict, source: str
                     ) -> Tuple[StateDict, List[str]]:
    """Fit a backbone state dict to ``model``'s configuration.

    Resamples the position embedding and relative position tables (BEiT's bicubically,
    ViTDet's ``rel_pos_h/w`` linearly, as ViTDet does) to the model's grids, and drops the
    class token / position embedding / final norm when the model has none. Returns the new
    dict and a list of human-readable notes of what was changed.
    """
    sd = dict(state_dict)
    notes = []
    grid = model.patch_embed.grid_size
    if 'pos_embed' in sd:
        if model.pos_embed is None:
            del sd['pos_embed']
            notes.append('dropped pos_embed (use_abs_pos_embed=False)')
        else:
            pos = sd['pos_embed']
            src_prefix, src_grid = _infer_pos_layout(pos.shape[1], source)
            if src_prefix and not model.with_cls_token:
                pos = pos[:, src_prefix:]
                notes.append('dropped the class-token entry of pos_embed')
            elif model.with_cls_token and not src_prefix:
                raise CheckpointError(f'{source}: pos_embed has no class-token entry but the '
                                      'model uses a class token')
            sd['pos_embed'] = resize_pos_embed(pos, src_grid, grid, model.num_prefix_tokens)
            if tuple(src_grid) != tuple(grid):
                notes.append(f'resampled pos_embed from grid {src_grid} to {tuple(grid)}')
    if not model.final_norm and any(k.startswith('norm.') for k in sd):
        sd = {k: v for k, v in sd.items() if not k.startswith('norm.')}
        notes.append('dropped the final norm (final_norm=False)')
    if 'cls_token' in sd and model.cls_token is None:
        del sd['cls_token']
        notes.append('dropped cls_token (with_cls_token=False)')
    for i, block in enumerate(model.blocks):
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


def load_pretrained(model: nn.Module, path: str, prefix: Optional[str] = None) -> None:
    """Load a backbone checkpoint file (``prefix``: keep and strip keys with it)."""
    raw = load_checkpoint_file(path)
    require_converted(raw, path)
    if not prefix and source_format(raw) == 'mixedae':
        raise CheckpointError(
            f'{path} is a checkpoint of tools/train.py (backbone.* and other weights), not a '
            f'backbone checkpoint: convert it first with .venv/bin/python '
            f'tools/convert_checkpoint.py {path} OUT.pth --src-format mixedae, then give OUT.pth')
    sd = state_dict_of(raw, path)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise CheckpointError(f'{path}: no keys start with prefix {prefix!r}')
    load_backbone_state(model, sd, path)


def load_backbone_state(model: nn.Module, state_dict: StateDict, source: str) -> None:
    """Load backbone weights; raise unless every key matches or is optional
    (:data:`OPTIONAL_KEY`), and log a key report."""
    sd, notes = adapt_state_dict(model, state_dict, source)
    check_architecture(model.state_dict(), sd, source)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    kept_at_init = [k for k in missing if OPTIONAL_KEY.match(k)]
    bad_missing = [k for k in missing if not OPTIONAL_KEY.match(k)]
    if bad_missing or unexpected:
        raise CheckpointError(
            f'{source} does not fit mixedae.ViT: missing keys {describe_keys(bad_missing)}; '
            f'unexpected keys {describe_keys(unexpected)}. Convert it first with '
            '.venv/bin/python tools/convert_checkpoint.py (--src-format: '
            f'{", ".join(FORMATS)})')
    report = [f'loaded {len(sd)} tensors from {source}']
    report += notes
    if kept_at_init:
        report.append(f'{len(kept_at_init)} tensors kept at their initial value '
                      f'(absent from the checkpoint, expected): '
                      f'{summarize_keys(kept_at_init)}')
    print_log('mixedae.ViT: ' + '; '.join(report), logger='current')


def check_architecture(own: StateDict, sd: StateDict, source: str) -> None:
    """One error naming both architectures when the checkpoint ``sd`` is another ViT size than
    the model's state dict ``own`` (instead of one size-mismatch or missing-key message per
    tensor)."""
    wrong = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if not wrong and _depth(sd) in (0, _depth(own)):
        return
    detail = (f'{wrong[0]} is {tuple(sd[wrong[0]].shape)} in the checkpoint and '
              f'{tuple(own[wrong[0]].shape)} in the model ({len(wrong)} tensors differ)'
              if wrong else f'the checkpoint has {_depth(sd)} blocks, the model {_depth(own)}')
    raise CheckpointError(
        f'{source} does not match the config: {detail}. The checkpoint is a ViT with '
        f'{_architecture(sd)}, the config builds {_architecture(own)}; use the config made '
        'for this checkpoint (e.g. a tiny config for the demo checkpoints).')


def _depth(sd: StateDict) -> int:
    """Number of transformer blocks in a backbone state dict."""
    return len({k.split('.')[1] for k in sd if k.startswith('blocks.')})


def _architecture(sd: StateDict) -> str:
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
