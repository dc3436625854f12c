"""Reports on the keys of a state dict against a model's: which are missing or unexpected, and
short human-readable lists of them for one-line errors and logs. Nothing here knows what the
keys mean (see :mod:`mixedae.models.backbones.checkpoint_layouts` for the backbone's)."""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Sequence, Tuple


def key_coverage(model_keys: Iterable[str], checkpoint_keys: Iterable[str]
                 ) -> Tuple[List[str], List[str]]:
    """(missing, unexpected): model keys the checkpoint lacks, checkpoint keys the model lacks.

    A ``module.`` prefix on checkpoint keys is ignored, as MMEngine's loader strips it.
    """
    ckpt = {k[len('module.'):] if k.startswith('module.') else k for k in checkpoint_keys}
    model = set(model_keys)
    return sorted(model - ckpt), sorted(ckpt - model)


def describe_keys(keys: Sequence[str], first: int = 5) -> str:
    """``'3: a, b, c'`` or ``'120: a, b, c, d, e, ...'``."""
    shown = ', '.join(keys[:first]) + (', ...' if len(keys) > first else '')
    return f'{len(keys)}: {shown}' if keys else '0'


def summarize_keys(keys: Sequence[str]) -> str:
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
