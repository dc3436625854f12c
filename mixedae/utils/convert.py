"""Conversion of pretraining checkpoints to ``mixedae.ViT`` backbone state dicts.

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

import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch

from .checkpoint import CheckpointError, load_checkpoint_file
from .io import atomic_write

FORMATS = ('mixedae', 'mae', 'ibot', 'timm', 'mmseg')

#: every key a ``mixedae.ViT`` state dict may hold.
BACKBONE_KEY = re.compile(
    r'^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)'
    r'|blocks\.\d+\.((norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)'
    r'|ls[12]\.gamma|attn\.(relative_position_bias_table|rel_pos_[hw])))$')

#: keys each format may carry that are not part of the transfer backbone.
DROPPABLE = {
    'mixedae': re.compile(r'^segment_embed(\..*)?$'),
    'mae': re.compile(r'^(mask_token|decoder_.*|head\..*|fc_norm\..*)$'),
    'ibot': re.compile(r'^(masked_embed|head\..*)$'),
    'timm': re.compile(r'^(head\..*|fc_norm\..*)$'),
    'mmseg': re.compile(r'^blocks\.\d+\.attn\.relative_position_index$'),
}

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


def mmseg_to_timm_names(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an mmseg ``MAE`` / ``BEiT`` backbone state dict to timm's (``mixedae.ViT``) names.

    BEiT-style separate ``q_bias`` / ``v_bias`` become timm's fused ``qkv.bias`` with a zero
    key bias (what mmseg's attention computes); names that match no rule are kept as they are.
    """
    out: Dict[str, torch.Tensor] = {}
    qv: Dict[str, Dict[str, torch.Tensor]] = {}
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


def _weights(checkpoint: Any, entry: str, source: str) -> Dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict) or entry not in checkpoint:
        found = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f'{source}: expected a {entry!r} entry, found {found}')
    return checkpoint[entry]


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def _tensor_dict(checkpoint: Any, source: str, what: str) -> Dict[str, torch.Tensor]:
    """A plain dict of tensors, or the one a training checkpoint holds under 'state_dict'."""
    raw = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{source}: {what} is a dict of tensors, or a training checkpoint "
                              "with such a dict under 'state_dict'")
    return dict(raw)


def extract_backbone(checkpoint: Any, src_format: str, source: str = '<checkpoint>',
                     key: Optional[str] = None
                     ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
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
        raw = _tensor_dict(checkpoint, source, 'an mmseg checkpoint')
        if any(n.startswith('backbone.') for n in raw):  # a whole segmentor: keep the backbone
            dropped += [n for n in raw if not n.startswith('backbone.')]
            raw = {_strip(n, 'backbone.'): v for n, v in raw.items() if n.startswith('backbone.')}
        flat = mmseg_to_timm_names(raw)
    else:  # timm: a plain state dict, or a train.py checkpoint holding one under 'state_dict'
        flat = _tensor_dict(checkpoint, source, 'a timm checkpoint')

    backbone, unknown = {}, []
    for name, value in flat.items():
        if BACKBONE_KEY.match(name):
            backbone[name] = value
        elif DROPPABLE[src_format].match(name):
            dropped.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(f'{source}: keys not recognised for --src-format {src_format}: '
                              f'{unknown[:20]}{" ..." if len(unknown) > 20 else ""}')
    if not backbone:
        raise CheckpointError(f'{source}: no backbone weights found for --src-format '
                              f'{src_format}')
    return backbone, dropped


def convert_checkpoint(src: str, dst: str, src_format: str, key: Optional[str] = None
                       ) -> Tuple[int, List[str]]:
    """Read ``src`` with the safe loader, keep its backbone (:func:`extract_backbone`) and write
    ``{'state_dict': ..., 'meta': ...}`` to ``dst`` atomically (a kill leaves the old output or
    none). Returns the number of tensors kept and the names dropped."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f'output {dst} would overwrite the input')
    if key is not None and src_format != 'ibot':
        raise ValueError('--key is only meaningful with --src-format ibot')
    backbone, dropped = extract_backbone(load_checkpoint_file(src), src_format, src, key)
    with atomic_write(dst, 'wb') as f:
        torch.save(dict(state_dict=backbone, meta=dict(src_format=src_format,
                                                       source=os.path.abspath(src), key=key)), f)
    return len(backbone), dropped
