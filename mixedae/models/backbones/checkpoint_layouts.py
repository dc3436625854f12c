"""Release layouts to backbone keys: the key layout of ``mixedae.ViT``, recognition of the
layout a checkpoint is in, and conversion of release and pretraining checkpoints to it.

Nothing here needs a model: files are read by the safe loader (:mod:`mixedae.utils.checkpoint`)
and everything is about what the keys of a state dict mean. :data:`KEY_LAYOUT` is the one
description of the backbone's keys: conversion keeps what it matches, loading into a model
(:mod:`.loading`) tolerates the absence of its optional entries.

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
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, state_dict_of
from mixedae.utils.errors import InvalidInputError
from mixedae.utils.io import atomic_write
from mixedae.utils.key_report import describe_keys

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


def _format_hint(checkpoint: Any, src_format: str) -> str:
    """``'; it looks like --src-format X'`` when the checkpoint looks like another format."""
    detected = source_format(checkpoint)
    return f'; it looks like --src-format {detected}' if detected not in (None, src_format) else ''


def _weights(checkpoint: Any, entry: str, source: str, src_format: str) -> StateDict:
    if not isinstance(checkpoint, dict) or entry not in checkpoint:
        found = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f'{source}: expected a {entry!r} entry, found {found}'
                              f'{_format_hint(checkpoint, src_format)}')
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
        for name, value in _weights(checkpoint, 'state_dict', source, src_format).items():
            if name.startswith('backbone.'):
                flat[_strip(name, 'backbone.')] = value
            else:
                dropped.append(name)
    elif src_format == 'mae':
        flat = dict(_weights(checkpoint, 'model', source, src_format))
    elif src_format == 'ibot':
        if isinstance(checkpoint, dict) and 'state_dict' in checkpoint and not key:
            raw = checkpoint['state_dict']
        else:
            raw = _weights(checkpoint, key or 'teacher', source, src_format)
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
        raise CheckpointError(f'{source}: {found}{_format_hint(checkpoint, src_format)}')
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
