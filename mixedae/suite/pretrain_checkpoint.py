"""The one reader of pretraining checkpoints in the suite: the MixedAE / MAE checkpoints that
``tools/train.py`` writes (``backbone.*`` encoder, ``decoder.*``, heads), read by the safe
loader. A file without the parts a tool needs is refused in one line naming them; where a
converted backbone also does, a release layout is refused with its conversion command."""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from mixedae.models.backbones.checkpoint_layouts import require_converted
from mixedae.utils.checkpoint import load_checkpoint_file, state_dict_of
from mixedae.utils.errors import UserInputError

StateDict = Dict[str, torch.Tensor]


class CheckpointKindError(UserInputError, ValueError):
    """A checkpoint of another kind than the one a tool needs (one-line message)."""


def read_pretrain_checkpoint(checkpoint: str, require: Sequence[str] = ('backbone',)
                             ) -> StateDict:
    """The weights of a pretraining checkpoint, with a ``PART.*`` key for every ``require``d
    part (``'backbone'``: the encoder, ``'decoder'``: the pixel decoder); ``require=()``
    also takes a converted backbone (a release layout is then named with its conversion,
    which gives one)."""
    raw = load_checkpoint_file(checkpoint)
    keys = raw.get('state_dict', raw) if isinstance(raw, dict) else {}
    missing = [part for part in require
               if not any(str(k).startswith(part + '.') for k in keys)]
    if missing:
        raise CheckpointKindError(
            f'{checkpoint} has no {", ".join(part + ".*" for part in missing)} weights: this '
            'needs a pretraining checkpoint (work_dirs/<run>/epoch_N.pth from tools/train.py), '
            'not a converted backbone')
    require_converted(raw, checkpoint)
    return state_dict_of(raw, checkpoint)


def encoder_weights(state_dict: StateDict) -> StateDict:
    """The ``backbone.*`` weights of a pretraining state dict, without the prefix (the
    pretraining encoder's own names, segment embeddings included)."""
    return {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
