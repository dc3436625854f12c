"""The one table of config names the suite uses, resolved against an explicit repository root.

A name is ``<family>-<scale>``: the pretraining methods (``mae``, ``naivemix``, ``mixedae``) at
``tiny`` / ``small`` / ``base`` / ``large``, and the transfer protocols (``ade20k``, ``coco_a``:
Mask R-CNN + FPN, ``vitdet``) at ``tiny`` (generated data, CPU) and ``base`` (ViT-B, random
init), and the linear probe of frozen features (``ade20k_linear``) at ``tiny``. Tools pass the
root of their checkout; nothing here guesses it from ``__file__``.
:func:`set_data_root` points a tiny transfer config at generated data.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Dict, Sequence

#: config name -> path relative to the repository root
CONFIGS: Dict[str, str] = {
    'mae-tiny': 'configs/pretrain/mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    'mixedae-tiny': 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    'mixedae-small': 'configs/pretrain/mixedae_vit-small-p16_8xb512-coslr-300e_in1k.py',
    'mae-base': 'configs/pretrain/mae_vit-base-p16_8xb512-coslr-300e_in1k.py',
    'naivemix-base': 'configs/pretrain/naivemix_vit-base-p16_8xb512-coslr-300e_in1k.py',
    'mixedae-base': 'configs/pretrain/mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py',
    'mixedae-large': 'configs/pretrain/mixedae_vit-large-p16_8xb512-coslr-300e_in1k.py',
    'ade20k-tiny': 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
    'ade20k-base': 'configs/ade20k/upernet_vit-b16-scratch_8xb2-160k_ade20k-512x512.py',
    'ade20k_linear-tiny': 'configs/ade20k/linear_vit-tiny-p8_1xb4-300iter_ade20k-synthetic-64.py',
    'coco_a-tiny': 'configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py',
    'coco_a-base': 'configs/coco/mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py',
    'vitdet-tiny': 'configs/coco/vitdet_mask-rcnn_vit-tiny-p8_1xb2-20iter_coco-synthetic-64.py',
    'vitdet-base': 'configs/coco/vitdet_mask-rcnn_vit-b16-scratch_16xb4-100e_coco-lsj-1024.py',
}


@dataclass(frozen=True)
class Repo:
    """A checkout of this repository: ``root`` holds ``configs/`` and ``tools/``."""
    root: str

    def path(self, relative: str) -> str:
        """``relative`` (e.g. ``tools/train.py``) under the root."""
        return osp.join(self.root, relative)

    def config(self, name: str) -> str:
        """Absolute path of config ``name`` (a key of :data:`CONFIGS`); a clear error for an
        unknown name or a root without that file."""
        if name not in CONFIGS:
            raise KeyError(f'unknown config name {name!r}; known: {", ".join(sorted(CONFIGS))}')
        path = self.path(CONFIGS[name])
        if not osp.isfile(path):
            raise FileNotFoundError(f'config {name!r} not found at {path} '
                                    f'(is {self.root} a checkout of mixedae?)')
        return path

    def load(self, name: str, import_modules: bool = True):
        """The MMEngine ``Config`` of ``name``; ``import_modules``: import its
        ``custom_imports`` (the backbone benchmark needs none of mmseg's or mmdet's)."""
        from mmengine.config import Config
        return Config.fromfile(self.config(name), import_custom_modules=import_modules)


def set_data_root(cfg, task: str, root: str, splits: Sequence[str] = ('train', 'val', 'test')
                  ) -> None:
    """Point the ``splits`` datasets of a transfer config at generated data in ``root`` (as
    ``write_dataset`` lays it out); for COCO (``task`` other than ``ade20k``) the val / test
    evaluators read ``root/annotations/instances_val2017.json``."""
    for split in splits:
        cfg[f'{split}_dataloader'].dataset.data_root = root
        if task != 'ade20k' and split != 'train':
            cfg[f'{split}_evaluator'].ann_file = osp.join(root,
                                                          'annotations/instances_val2017.json')
