"""The encoder a pretraining run starts from (its step 0) as a backbone checkpoint: the
transfer floor "random init" that equals the pretrained encoders' own initialisation (MAE's:
xavier-uniform Linears, fixed sin-cos positions), not the transfer ViT's timm initialisation."""
from __future__ import annotations

import os

import torch
from mmengine.runner import set_random_seed

from mixedae.models import MixedAE
from mixedae.models.backbones.checkpoint_layouts import extract_backbone
from mixedae.utils.io import atomic_write
from .figures import build_pretrain_model


def step0_model(config: str, seed: int) -> MixedAE:
    """The model of pretraining config ``config`` as ``tools/train.py`` builds it with
    ``randomness.seed = seed`` (MMEngine's ``set_random_seed``, then the model), before its
    first step."""
    set_random_seed(seed)
    return build_pretrain_model(config)[0]


def write_step0_backbone(config: str, seed: int, out: str) -> int:
    """Write the encoder of :func:`step0_model` to ``out`` in the layout of
    ``tools/convert_checkpoint.py --src-format mixedae`` (atomically); the number of tensors."""
    state = {f'backbone.{k}': v for k, v in step0_model(config, seed).backbone.state_dict()
             .items()}
    backbone, _ = extract_backbone(dict(state_dict=state), 'mixedae', config)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_write(out, 'wb') as f:
        torch.save(dict(state_dict=backbone, meta=dict(
            src_format='mixedae', source=f'step 0 of {os.path.abspath(config)}, seed {seed}')), f)
    return len(backbone)
