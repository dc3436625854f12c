"""Seeded synthetic scenes: objects of a few shape classes with their own colours and
textures, at random sizes and positions, overlapping (later objects occlude earlier ones) on a
textured background. Each scene comes with exact per-instance visible masks, from which the
dataset writers derive segmentation labels and instance annotations that agree pixel for pixel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

#: (name, base RGB colour) of each object class; class k is written as label k + 1 in ADE20K
#: format (0 = background / "other") and as category id k + 1 in COCO format.
SHAPE_CLASSES: List[Tuple[str, Tuple[int, int, int]]] = [
    ('disc', (220, 60, 50)),
    ('square', (40, 160, 70)),
    ('triangle', (50, 90, 220)),
    ('ring', (230, 200, 40)),
    ('bar', (170, 60, 200)),
]


@dataclass
class Instance:
    category: int        # index into SHAPE_CLASSES
    mask: np.ndarray     # H x W bool, the visible (unoccluded) pixels


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour field with fine grain: H x W x 3 uint8."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    field += rng.normal(0, 6, size=field.shape).astype(np.float32)
    return np.clip(field, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, category: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(0.12, 0.35) * min(h, w)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    name = SHAPE_CLASSES[category][0]
    if name == 'disc':
        cv2.circle(mask, (int(cx), int(cy)), int(size / 2), 1, -1)
    elif name == 'ring':
        cv2.circle(mask, (int(cx), int(cy)), int(size / 2), 1, max(2, int(size / 6)))
    else:
        if name == 'square':
            pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * size / 2
        elif name == 'triangle':
            pts = np.array([[0, -1], [0.87, 0.5], [-0.87, 0.5]], np.float32) * size / 1.6
        else:  # bar
            pts = np.array([[-1, -0.2], [1, -0.2], [1, 0.2], [-1, 0.2]], np.float32) * size / 1.2
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T + np.array([cx, cy])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _texture(rng: np.random.Generator, category: int, h: int, w: int) -> np.ndarray:
    """Class colour with a class-specific stripe frequency: H x W x 3 float."""
    colour = np.array(SHAPE_CLASSES[category][1], np.float32) + rng.normal(0, 12, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin((xx + yy) * (0.3 + 0.25 * category)) * 25
    return np.clip(colour[None, None] + stripes[..., None], 0, 255)


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int = 4
                 ) -> Tuple[np.ndarray, List[Instance]]:
    """One scene: H x W x 3 uint8 RGB image and its visible instances (empty masks dropped)."""
    image = _background(rng, height, width).astype(np.float32)
    drawn: List[Tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        category = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(rng, category, height, width)
        image[mask] = _texture(rng, category, height, width)[mask]
        drawn.append((category, mask))
    instances = []
    covered = np.zeros((height, width), bool)
    for category, mask in reversed(drawn):           # later objects occlude earlier ones
        visible = mask & ~covered
        covered |= mask
        if visible.sum() >= 4:
            instances.append(Instance(category, visible))
    return image.astype(np.uint8), instances[::-1]


def semantic_label(instances: List[Instance], height: int, width: int) -> np.ndarray:
    """ADE20K-style label map: 0 = background, k + 1 = class k."""
    label = np.zeros((height, width), np.uint8)
    for inst in instances:
        label[inst.mask] = inst.category + 1
    return label


def write_ade20k(root: str, num_train: int, num_val: int, size: Tuple[int, int] = (64, 64),
                 seed: int = 0) -> str:
    """Write an ADEChallengeData2016-style tree under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir = os.path.join(root, 'images', split)
        ann_dir = os.path.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            image, instances = render_scene(rng, *size)
            name = f'ADE_{split[:5]}_{i:08d}'
            cv2.imwrite(os.path.join(img_dir, name + '.jpg'), image[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(ann_dir, name + '.png'), semantic_label(instances, *size))
    return root
