"""Backbone checkpoints: the key layout of ``mixedae.ViT``, conversion of pretraining checkpoints
to it, and loading into a model with a checked key report.

Files are read by the safe loader (:mod:`mixedae.utils.checkpoint`); everything here is about
what the keys of a state dict mean. :data:`KEY_LAYOUT` is the one description of the backbone's
keys: conversion keeps what it matches, loading tolerates the absence of its optional entries.

Supported layouts (``src_format``):

- ``mixedae``: this project's MMEngine pretraining checkpoints, ``{'state_dict': ...}``; the
  transfer encoder lives under ``backbone.``; decoder, contrastive head, mask token and the
  pretraining-only encoder parameters (segment embeddings) are dropped.
- ``mae``: the official MAE release, ``{'model': ...}`` with timm names (also MAE's training
  checkpoints, which add optimizer, scaler, epoch and args); ``mask_token``, ``decoder_*`` and
  fine-tuning heads are dropped.
- ``ibot``: the official iBOT release, ``{'teacher': ..., 'student': ...}`` (pick one with
  ``key``, teacher by default) or a backbone-only ``{'state_dict': ...}``; ``module.`` and
  ``backbone.`` prefixes are removed, the projection head and ``masked_embed`` are dropped.
- ``timm``: a plain timm ``VisionTransformer`` state dict, or a timm ``train.py`` checkpoint
  (its ``state_dict`` entry); the classifier head is dropped.
- ``mmseg``: mmseg's ``MAE`` / ``BEiT`` backbone names (``layers.i.ln1``, ``ffn.layers.0.0``,
  ``gamma_1``, ...), a whole mmseg segmentor checkpoint (``backbone.`` keys kept, heads and neck
  dropped) or a backbone-only dict; renamed by :func:`mmseg_to_timm_names`.

Anything that is neither a known backbone key nor a known droppable key is an error.
"""
from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, state_dict_of
from mixedae.utils.errors import InvalidInputError, MissingInputError
from mixedae.utils.io import atomic_write
from ..layers.pos_embed import (Grid, num_relative_entries, resize_pos_embed, resize_rel_pos_1d,
                                resize_rel_pos_table)

if TYPE_CHECKING:
    from .vit import ViT

StateDict = Dict[str, torch.Tensor]

#: every parameter name of a ``mixedae.ViT`` (timm's names), and whether a checkpoint may lack
#: it: relative positions and layer scales then keep their initial value (zero relative
#: positions, as in BEiT/MAE fine-tuning and ViTDet; layer scale at ``init_values``).
KEY_LAYOUT: Tuple[Tuple[str, bool], ...] = (
    (r'cls_token', False),
    (r'pos_embed', False),
    (r'patch_embed\.proj\.(weight|bias)', False),
    (r'norm\.(weight|bias)', False),
    (r'blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)', False),
    (r'blocks\.\d+\.ls[12]\.gamma', True),
    (r'blocks\.\d+\.attn\.(relative_position_bias_table|rel_pos_[hw])', True),
)


def _any_of(patterns: Iterable[str]) -> re.Pattern:
    return re.compile('^(' + '|'.join(patterns) + ')$')


#: every key a ``mixedae.ViT`` state dict may hold.
BACKBONE_KEY = _any_of(pattern for pattern, _ in KEY_LAYOUT)
#: the keys a backbone checkpoint may lack.
OPTIONAL_KEY = _any_of(pattern for pattern, optional in KEY_LAYOUT if optional)

#: keys each format may carry that are not part of the transfer backbone.
DROPPABLE = {
    'mixedae': re.compile(r'^segment_embed(\..*)?$'),
    'mae': re.compile(r'^(mask_token|decoder_.*|head\..*|fc_norm\..*)$'),
    'ibot': re.compile(r'^(masked_embed|head\..*)$'),
    'timm': re.compile(r'^(head\..*|fc_norm\..*)$'),
    'mmseg': re.compile(r'^blocks\.\d+\.attn\.relative_position_index$'),
}
#: the checkpoint layouts ``extract_backbone`` reads (``--src-format``)
FORMATS = tuple(DROPPABLE)

#: mmseg ``MAE`` / ``BEiT`` backbone name -> timm name (applied in order, first match wins).
_MMSEG_RENAMES = [
    (re.compile(r'^patch_embed\.projection\.'), 'patch_embed.proj.'),
    (re.compile(r'^ln1\.'), 'norm.'),                                  # final_norm=True
    (re.compile(r'^layers\.(\d+)\.ln([12])\.'), r'blocks.\1.norm\2.'),
    (re.compile(r'^layers\.(\d+)\.gamma_([12])$'), r'blocks.\1.ls\2.gamma'),
    (re.compile(r'^layers\.(\d+)\.ffn\.layers\.0\.0\.'), r'blocks.\1.mlp.fc1.'),
    (re.compile(r'^layers\.(\d+)\.ffn\.layers\.1\.'), r'blocks.\1.mlp.fc2.'),
    (re.compile(r'^layers\.(\d+)\.attn\.'), r'blocks.\1.attn.'),
]


# ------------------------------------------------------------------------------ conversion
def mmseg_to_timm_names(state_dict: StateDict) -> StateDict:
    """Rename an mmseg ``MAE`` / ``BEiT`` backbone state dict to timm's (``mixedae.ViT``) names.

    BEiT-style separate ``q_bias`` / ``v_bias`` become timm's fused ``qkv.bias`` with a zero
    key bias (what mmseg's attention computes); names that match no rule are kept as they are.
    """
    out: StateDict = {}
    qv: Dict[str, StateDict] = {}
    for name, value in state_dict.items():
        for pattern, repl in _MMSEG_RENAMES:
            if pattern.match(name):
                name = pattern.sub(repl, name)
                break
        m = re.match(r'^(blocks\.\d+\.attn\.)([qv])_bias$', name)
        if m:
            qv.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            out[name] = value
    for prefix, biases in qv.items():
        if set(biases) != {'q', 'v'}:
            raise CheckpointError(f'{prefix}: q_bias and v_bias come in pairs, found '
                                  f'{sorted(k + "_bias" for k in biases)}')
        out[prefix + 'qkv.bias'] = torch.cat([biases['q'], torch.zeros_like(biases['v']),
                                              biases['v']])
    return out


def _weights(checkpoint: Any, entry: str, source: str) -> StateDict:
    if not isinstance(checkpoint, dict) or entry not in checkpoint:
        found = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f'{source}: expected a {entry!r} entry, found {found}')
    return checkpoint[entry]


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def extract_backbone(checkpoint: Any, src_format: str, source: str = '<checkpoint>',
                     key: Optional[str] = None) -> Tuple[StateDict, List[str]]:
    """Backbone state dict of a loaded checkpoint, and the list of dropped keys."""
    if src_format not in FORMATS:
        raise ValueError(f'unknown src_format {src_format!r}; choose from {FORMATS}')
    dropped: List[str] = []
    if src_format == 'mixedae':
        flat = {}
        for name, value in _weights(checkpoint, 'state_dict', source).items():
            if name.startswith('backbone.'):
                flat[_strip(name, 'backbone.')] = value
            else:
                dropped.append(name)
    elif src_format == 'mae':
        flat = dict(_weights(checkpoint, 'model', source))
    elif src_format == 'ibot':
        if isinstance(checkpoint, dict) and 'state_dict' in checkpoint and not key:
            raw = checkpoint['state_dict']
        else:
            raw = _weights(checkpoint, key or 'teacher', source)
        flat = {_strip(_strip(n, 'module.'), 'backbone.'): v for n, v in raw.items()}
    elif src_format == 'mmseg':
        raw = state_dict_of(checkpoint, source, 'an mmseg checkpoint')
        if any(n.startswith('backbone.') for n in raw):  # a whole segmentor: keep the backbone
            dropped += [n for n in raw if not n.startswith('backbone.')]
            raw = {_strip(n, 'backbone.'): v for n, v in raw.items() if n.startswith('backbone.')}
        flat = mmseg_to_timm_names(raw)
    else:  # timm: a plain state dict, or a train.py checkpoint holding one under 'state_dict'
        flat = dict(state_dict_of(checkpoint, source, 'a timm checkpoint'))

    backbone, unknown = {}, []
    for name, value in flat.items():
        if BACKBONE_KEY.match(name):
            backbone[name] = value
        elif DROPPABLE[src_format].match(name):
            dropped.append(name)
        else:
            unknown.append(name)
    if unknown or not backbone:
        found = (f'keys not recognised for --src-format {src_format}: '
                 f'{describe_keys(unknown)}' if unknown else
                 f'no backbone weights found for --src-format {src_format}')
        detected = source_format(checkpoint)
        hint = (f'; it looks like --src-format {detected}'
                if detected and detected != src_format else '')
        raise CheckpointError(f'{source}: {found}{hint}')
    return backbone, dropped


_MMSEG_KEY = re.compile(r'^(backbone\.)?(layers\.\d+\.|patch_embed\.projection\.)')


def release_format(checkpoint: Any) -> Optional[str]:
    """The ``--src-format`` of a checkpoint in a release layout that a ``mixedae.ViT`` does not
    load as it is (MAE's ``model`` entry, iBOT's ``teacher`` / ``student``, mmseg's names, timm's
    classifier head); None for a backbone or pretraining checkpoint of this project."""
    if not isinstance(checkpoint, dict):
        return None
    if isinstance(checkpoint.get('model'), dict):
        return 'mae'
    if any(isinstance(checkpoint.get(k), dict) for k in ('teacher', 'student')):
        return 'ibot'
    sd = checkpoint.get('state_dict', checkpoint)
    if not isinstance(sd, dict):
        return None
    if any(_MMSEG_KEY.match(str(k)) for k in sd):
        return 'mmseg'
    if any(DROPPABLE['timm'].match(str(k)) for k in sd) and all(
            BACKBONE_KEY.match(str(k)) or DROPPABLE['timm'].match(str(k)) for k in sd):
        return 'timm'
    return None


def source_format(checkpoint: Any) -> Optional[str]:
    """The ``--src-format`` a checkpoint looks like: a release layout (:func:`release_format`),
    or ``mixedae`` for a checkpoint of ``tools/train.py`` holding ``backbone.*`` weights
    (pretraining or transfer); None otherwise."""
    found = release_format(checkpoint)
    if found or not isinstance(checkpoint, dict):
        return found
    sd = checkpoint.get('state_dict', checkpoint)
    if isinstance(sd, dict) and any(str(k).startswith('backbone.') for k in sd):
        return 'mixedae'
    return None


def require_converted(checkpoint: Any, source: str) -> None:
    """Raise a :class:`CheckpointError` with the conversion command when ``checkpoint`` is in
    a release layout (:func:`release_format`)."""
    src_format = release_format(checkpoint)
    if src_format:
        raise CheckpointError(
            f'{source} is a checkpoint in the {src_format} release layout, which a mixedae.ViT '
            f'does not load as it is: convert it first with .venv/bin/python '
            f'tools/convert_checkpoint.py '
            f'{source} OUT.pth --src-format {src_format}, then give OUT.pth')


def convert_checkpoint(src: str, dst: str, src_format: str, key: Optional[str] = None
                       ) -> Tuple[int, List[str]]:
    """Read ``src`` with the safe loader, keep its backbone (:func:`extract_backbone`) and write
    ``{'state_dict': ..., 'meta': ...}`` to ``dst`` atomically (a kill leaves the old output or
    none). Returns the number of tensors kept and the names dropped."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InvalidInputError(f'output {dst} would overwrite the input')
    if key is not None and src_format != 'ibot':
        raise InvalidInputError('--key is only meaningful with --src-format ibot')
    backbone, dropped = extract_backbone(load_checkpoint_file(src), src_format, src, key)
    with atomic_write(dst, 'wb') as f:
        torch.save(dict(state_dict=backbone, meta=dict(src_format=src_format,
                                                       source=os.path.abspath(src), key=key)), f)
    return len(backbone), dropped


# --------------------------------------------------------------------- loading into a ViT
def check_pretrained(init_cfg: Optional[dict]) -> None:
    """Fail at model build time (before any data is read) on a missing checkpoint."""
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        path = init_cfg.get('checkpoint')
        if not path or not os.path.isfile(os.path.expanduser(str(path))):
            raise MissingInputError(
                f'model.backbone.init_cfg.checkpoint: checkpoint file not found: {path!r}')


def adapt_state_dict(model: ViT, state_dict: StateDict, source: str
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


def load_pretrained(model: ViT, path: str, prefix: Optional[str] = None) -> None:
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
        sd = {_strip(k, prefix): v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise CheckpointError(f'{path}: no keys start with prefix {prefix!r}')
    load_backbone_state(model, sd, path)


def load_backbone_state(model: ViT, state_dict: StateDict, source: str) -> None:
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
                      f'{_summarize_keys(kept_at_init)}')
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


# ------------------------------------------------------------------------------ key reports
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


def key_coverage(model_keys: Iterable[str], checkpoint_keys: Iterable[str]
                 ) -> Tuple[List[str], List[str]]:
    """(missing, unexpected): model keys the checkpoint lacks, checkpoint keys the model lacks.

    A ``module.`` prefix on checkpoint keys is ignored, as MMEngine's loader strips it.
    """
    ckpt = {_strip(k, 'module.') for k in checkpoint_keys}
    model = set(model_keys)
    return sorted(model - ckpt), sorted(ckpt - model)


def describe_keys(keys: Sequence[str], first: int = 5) -> str:
    """``'3: a, b, c'`` or ``'120: a, b, c, d, e, ...'``."""
    shown = ', '.join(keys[:first]) + (', ...' if len(keys) > first else '')
    return f'{len(keys)}: {shown}' if keys else '0'
