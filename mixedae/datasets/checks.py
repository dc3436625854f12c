"""Dataset layout checks: every problem is reported with its file (``tools/check_dataset.py``).

ADE20K: images/{training,validation}/*.jpg paired with annotations/{...}/*.png of the same
size and stem, label values 0-150 (0 = other, ignored in training).
COCO: annotations/instances_{train,val}2017.json readable, every listed image present in
{train,val}2017/ with the listed size, category ids defined and unique, each annotation's
image and category known, boxes inside the image, polygons / RLE well formed.
The label rule is shared with the pipeline transform ``CheckSegAnnotation``.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Iterable, List, Tuple

import cv2
import numpy as np

from .image_folder import IMG_EXTENSIONS


def bad_label_values(label: np.ndarray, num_classes: int, allowed: Iterable[int] = ()
                     ) -> List[int]:
    """Sorted values of ``label`` outside ``[0, num_classes)`` and ``allowed`` (one np.unique)."""
    values = np.unique(label)
    ok = (values >= 0) & (values < num_classes) | np.isin(values, list(allowed))
    return values[~ok].tolist()


ADE_SPLITS = ('training', 'validation')
ADE_MAX_LABEL = 150


def _stems(folder: str, exts: Tuple[str, ...]) -> Dict[str, str]:
    return {os.path.splitext(f)[0]: f for f in sorted(os.listdir(folder))
            if f.lower().endswith(exts)}


def check_ade20k(root: str, verbose: bool = False) -> List[str]:
    """Problems of an ADEChallengeData2016 tree (empty list: all good)."""
    problems: List[str] = []
    for split in ADE_SPLITS:
        img_dir = os.path.join(root, 'images', split)
        ann_dir = os.path.join(root, 'annotations', split)
        missing = [d for d in (img_dir, ann_dir) if not os.path.isdir(d)]
        if missing:
            problems += [f'{d}: folder missing' for d in missing]
            continue
        images, labels = _stems(img_dir, IMG_EXTENSIONS), _stems(ann_dir, ('.png',))
        problems += [f'{os.path.join(img_dir, images[s])}: no annotation {s}.png'
                     for s in images if s not in labels]
        problems += [f'{os.path.join(ann_dir, labels[s])}: no image' for s in labels
                     if s not in images]
        for stem in sorted(set(images) & set(labels)):
            img_path = os.path.join(img_dir, images[stem])
            ann_path = os.path.join(ann_dir, labels[stem])
            img = cv2.imread(img_path, cv2.IMREAD_COLOR)
            ann = cv2.imread(ann_path, cv2.IMREAD_UNCHANGED)
            if img is None:
                problems.append(f'{img_path}: unreadable image')
                continue
            if ann is None:
                problems.append(f'{ann_path}: unreadable annotation')
                continue
            if ann.ndim != 2:
                problems.append(f'{ann_path}: annotation must be single-channel, has shape '
                                f'{ann.shape}')
                continue
            if ann.shape != img.shape[:2]:
                problems.append(f'{ann_path}: size {ann.shape} differs from the image '
                                f'{img.shape[:2]}')
            bad = bad_label_values(ann, ADE_MAX_LABEL + 1)
            if bad:
                problems.append(f'{ann_path}: label values {bad} outside 0-{ADE_MAX_LABEL}')
        if verbose:
            print(f'{split}: {len(images)} images, {len(labels)} annotations')
    return problems


COCO_SPLITS = ('train2017', 'val2017')


def _check_segmentation(seg, height: int, width: int) -> str:
    """'' if the segmentation is a valid polygon list or RLE for an image of this size."""
    if isinstance(seg, list):
        if not seg:
            return 'empty polygon list'
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return 'a polygon needs an even number (>= 6) of coordinates'
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -1 or min(ys) < -1 or max(xs) > width + 1 or max(ys) > height + 1:
                return 'polygon outside the image'
        return ''
    if isinstance(seg, dict) and 'counts' in seg and 'size' in seg:
        if list(seg['size']) != [height, width]:
            return f'RLE size {seg["size"]} differs from the image ({height}, {width})'
        from pycocotools import mask as mask_utils
        try:
            rle = seg if not isinstance(seg['counts'], list) else \
                mask_utils.frPyObjects(seg, height, width)
            mask_utils.area(rle)
        except Exception as err:  # pycocotools raises plain exceptions on bad RLE
            return f'invalid RLE ({err})'
        return ''
    return 'segmentation is neither polygons nor RLE'


def check_coco(root: str, verbose: bool = False) -> List[str]:
    """Problems of a COCO-2017-style instance dataset (empty list: all good)."""
    problems: List[str] = []
    for split in COCO_SPLITS:
        ann_file = os.path.join(root, 'annotations', f'instances_{split}.json')
        img_dir = os.path.join(root, split)
        try:
            with open(ann_file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f'{ann_file}: cannot read ({err})')
            continue
        missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
        if missing:
            problems.append(f'{ann_file}: missing keys {missing}')
            continue
        cat_ids = [c['id'] for c in data['categories']]
        if len(set(cat_ids)) != len(cat_ids):
            problems.append(f'{ann_file}: duplicate category ids')
        images = {}
        for img in data['images']:
            images[img['id']] = img
            path = os.path.join(img_dir, img['file_name'])
            if not os.path.isfile(path):
                problems.append(f'{path}: image {img["id"]} listed in {ann_file} is missing')
                continue
            shape = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if shape is None:
                problems.append(f'{path}: unreadable image')
            elif shape.shape[:2] != (img['height'], img['width']):
                problems.append(f'{path}: size {shape.shape[:2]} differs from the listed '
                                f'({img["height"]}, {img["width"]})')
        for ann in data['annotations']:
            where = f'{ann_file}: annotation {ann.get("id")}'
            img = images.get(ann.get('image_id'))
            if img is None:
                problems.append(f'{where}: unknown image_id {ann.get("image_id")}')
                continue
            if ann.get('category_id') not in cat_ids:
                problems.append(f'{where}: unknown category_id {ann.get("category_id")}')
            x, y, w, h = ann.get('bbox', (0, 0, 0, 0))
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > img['width'] + 1 or \
                    y + h > img['height'] + 1:
                problems.append(f'{where}: bbox {[x, y, w, h]} empty or outside the image')
            error = _check_segmentation(ann.get('segmentation'), img['height'], img['width'])
            if error:
                problems.append(f'{where}: {error}')
        if verbose:
            print(f'{split}: {len(data["images"])} images, {len(data["annotations"])} '
                  f'annotations, {len(cat_ids)} categories')
    return problems


CHECKS: Dict[str, Callable[..., List[str]]] = dict(ade20k=check_ade20k, coco=check_coco)
