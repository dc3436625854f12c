"""The MAE pretraining pipeline's transforms (loading, random resized crop, packing)."""
from __future__ import annotations

import math
import random
from typing import Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from PIL import Image, UnidentifiedImageError

from mixedae.registry import TRANSFORMS

_INTERPOLATION = dict(bilinear=cv2.INTER_LINEAR, bicubic=cv2.INTER_CUBIC,
                      nearest=cv2.INTER_NEAREST)


@TRANSFORMS.register_module()
class LoadRGBImage(BaseTransform):
    """Read ``results['img_path']`` as an H x W x 3 uint8 RGB array into ``results['img']``.

    An unreadable or corrupt file raises an ``OSError`` naming the file.
    """

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            with Image.open(path) as img:
                results['img'] = np.asarray(img.convert('RGB'))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise OSError(f'cannot read image {path}: {err}') from err
        results['img_shape'] = results['ori_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area (``scale`` of the image, aspect ``ratio``) and resize it to ``size``.

    Same sampling as torchvision's RandomResizedCrop: 10 tries, then a centre crop.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = 'bicubic') -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if interpolation not in _INTERPOLATION:
            raise ValueError(f'interpolation must be one of {sorted(_INTERPOLATION)}, got '
                             f'{interpolation!r}')
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f'bad scale {scale} or ratio {ratio}')
        self.scale, self.ratio, self.interpolation = tuple(scale), tuple(ratio), interpolation

    def crop_box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        """(top, left, height, width) of the crop."""
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def transform(self, results: dict) -> dict:
        img = results['img']
        top, left, ch, cw = self.crop_box(*img.shape[:2])
        crop = img[top:top + ch, left:left + cw]
        results['img'] = cv2.resize(crop, (self.size[1], self.size[0]),
                                    interpolation=_INTERPOLATION[self.interpolation])
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation})')


@TRANSFORMS.register_module()
class PackImageInputs(BaseTransform):
    """``results['img']`` (H x W x C uint8) -> ``dict(inputs=C x H x W uint8 tensor)``."""

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        return dict(inputs=torch.from_numpy(img))
