"""Unlabelled image collections for pretraining (ImageNet's train folder, or any folder)."""
from __future__ import annotations

import os
from typing import List

from mmengine.dataset import BaseDataset

from mixedae.registry import DATASETS

#: image file endings read by mixedae (lower case; pretraining folders, dataset checks).
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


@DATASETS.register_module()
class ImageFolder(BaseDataset):
    """Images under ``data_root/data_prefix['img_path']``.

    Without ``ann_file`` the folder is scanned recursively (ImageNet's ``train/<class>/*.JPEG``
    layout or a flat folder), in sorted order. With ``ann_file`` each non-empty line holds a
    path relative to the image folder, optionally followed by a label (ignored: pretraining is
    unsupervised), as in ImageNet's ``meta/train.txt``.
    """

    def __init__(self, data_root: str = '', ann_file: str = '',
                 data_prefix: dict = dict(img_path=''), **kwargs) -> None:
        super().__init__(data_root=data_root, ann_file=ann_file, data_prefix=data_prefix,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        folder = self.data_prefix['img_path']
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'image folder not found: {folder}')
        if self.ann_file:
            paths = self._read_list(folder)
        else:
            paths = sorted(
                os.path.join(root, name)
                for root, _, files in os.walk(folder, followlinks=True) for name in files
                if name.lower().endswith(IMG_EXTENSIONS))
        if not paths:
            raise FileNotFoundError(f'no images ({", ".join(IMG_EXTENSIONS)}) found in {folder}')
        return [dict(img_path=p) for p in paths]

    def _read_list(self, folder: str) -> List[str]:
        if not os.path.isfile(self.ann_file):
            raise FileNotFoundError(f'image list not found: {self.ann_file}')
        paths = []
        with open(self.ann_file) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                path = os.path.join(folder, line.split()[0])
                if not os.path.isfile(path):
                    raise FileNotFoundError(f'{self.ann_file}:{line_no}: image not found: {path}')
                paths.append(path)
        return paths
