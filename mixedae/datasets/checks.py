"""Dataset layout checks: every problem is reported with its file (``tools/check_dataset.py``).

ADE20K: images/{training,validation}/*.jpg paired with annotations/{...}/*.png of the same
size and stem, label values 0-150 (0 = other, ignored in training).
COCO: annotations/instances_{train,val}2017.json readable, every listed image present in
{train,val}2017/ with the listed size, category ids defined and unique, each annotation's
image and category known, boxes inside the image, polygons / RLE well formed.
The label rule is shared with the pipeline transform ``CheckSegAnnotation``.

Each problem is a :class:`Problem` (a ``str`` with a ``kind``, so that :func:`cap_problems`
can show the first few of each kind); with ``verbose`` the checks print a progress line every
``every`` images and, per split, its counts and a warning when they differ from the published
size of the full split (:data:`FULL_SPLIT_IMAGES`).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np

from .image_folder import IMG_EXTENSIONS


def bad_label_values(label: np.ndarray, num_classes: int, allowed: Iterable[int] = ()
                     ) -> List[int]:
    """Sorted values of ``label`` outside ``[0, num_classes)`` and ``allowed`` (one np.unique)."""
    values = np.unique(label)
    ok = (values >= 0) & (values < num_classes) | np.isin(values, list(allowed))
    return values[~ok].tolist()


class Problem(str):
    """One problem line (``'<file>: <what is wrong>'``) and its ``kind`` (what is wrong, without
    the file and values), by which :func:`cap_problems` groups repeated problems."""

    kind: str

    def __new__(cls, text: str, kind: str) -> 'Problem':
        problem = super().__new__(cls, text)
        problem.kind = kind
        return problem


def cap_problems(problems: List[str], first: int = 5) -> List[str]:
    """The first ``first`` problems of each kind, in their order, each kind followed by one
    line ``... and N more of this kind (<kind>)`` when it had more; ``first=0``: all of them."""
    if first <= 0:
        return list(problems)
    by_kind: Dict[str, List[str]] = {}
    for problem in problems:
        by_kind.setdefault(getattr(problem, 'kind', problem), []).append(problem)
    lines: List[str] = []
    for kind, group in by_kind.items():
        lines += group[:first]
        if len(group) > first:
            lines.append(f'... and {len(group) - first} more of this kind ({kind})')
    return lines


#: images per split of the full data sets. ADE20K (SceneParse150, ADEChallengeData2016):
#: "The training data contains 20210 images, the validation data contains 2000 images"
#: (github.com/CSAILVision/sceneparsing, README). COCO 2017: 118,287 train and 5,000 val
#: images (the ``images`` lists of cocodataset.org's annotations_trainval2017.zip, as the
#: COCO 2017 dataset cards on huggingface.co count them; mmdet's docs do not state them).
FULL_SPLIT_IMAGES = {
    'ade20k': {'training': 20210, 'validation': 2000},
    'coco': {'train2017': 118287, 'val2017': 5000},
}


def split_size_warning(dataset: str, split: str, found: int) -> Optional[str]:
    """A warning line when ``found`` images differ from the full ``split`` of ``dataset``."""
    expected = FULL_SPLIT_IMAGES[dataset][split]
    if found == expected:
        return None
    return (f'warning: {dataset} {split}: {found:,} images, the full split has {expected:,}: '
            'this is not the full dataset (a subset or generated stand-in data); results on it '
            'are not comparable with published numbers')


#: images between two progress lines of a verbose check
PROGRESS_EVERY = 1000


class Progress:
    """Counts checked images and, every ``every`` of them, logs one line with the rate and the
    time left (mmengine's ``ProgressBar`` redraws a single line with carriage returns, which a
    log file or Slurm output keeps as one unreadable line)."""

    def __init__(self, label: str, total: int, every: int,
                 log: Optional[Callable[[str], None]]):
        self.label, self.total, self.every, self.log = label, total, max(every, 1), log
        self.done, self.start = 0, time.monotonic()

    def step(self) -> None:
        self.done += 1
        if self.log is None or self.done % self.every or self.done == self.total:
            return
        rate = self.done / max(time.monotonic() - self.start, 1e-6)
        self.log(f'{self.label}: {self.done:,}/{self.total:,} images checked ({rate:.0f}/s, '
                 f'about {(self.total - self.done) / rate:.0f} s left)')


def _log(verbose: bool) -> Optional[Callable[[str], None]]:
    return (lambda line: print(line, flush=True)) if verbose else None


def is_data_file(name: str) -> bool:
    """Whether a file name counts as data: not hidden (``.name``, e.g. macOS ``._x.jpg``) and
    not a temporary or partial download (``*.tmp``, ``*.partial``, ``name~``)."""
    return not name.startswith('.') and not name.endswith(('.tmp', '.partial', '~'))


ADE_SPLITS = ('training', 'validation')
ADE_MAX_LABEL = 150


def _stems(folder: str, exts: Tuple[str, ...]) -> Dict[str, str]:
    return {os.path.splitext(f)[0]: f for f in sorted(os.listdir(folder))
            if f.lower().endswith(exts) and is_data_file(f)}


def check_ade20k(root: str, verbose: bool = False, every: int = PROGRESS_EVERY) -> List[str]:
    """Problems of an ADEChallengeData2016 tree (empty list: all good); ``verbose``: progress,
    counts and split-size warnings on stdout."""
    problems: List[str] = []
    log = _log(verbose)
    for split in ADE_SPLITS:
        img_dir = os.path.join(root, 'images', split)
        ann_dir = os.path.join(root, 'annotations', split)
        missing = [d for d in (img_dir, ann_dir) if not os.path.isdir(d)]
        if missing:
            problems += [Problem(f'{d}: folder missing', 'folder missing') for d in missing]
            continue
        images, labels = _stems(img_dir, IMG_EXTENSIONS), _stems(ann_dir, ('.png',))
        problems += [Problem(f'{os.path.join(img_dir, images[s])}: no annotation {s}.png',
                             'image without annotation') for s in images if s not in labels]
        problems += [Problem(f'{os.path.join(ann_dir, labels[s])}: no image',
                             'annotation without image') for s in labels if s not in images]
        pairs = sorted(set(images) & set(labels))
        progress = Progress(split, len(pairs), every, log)
        for stem in pairs:
            progress.step()
            img_path = os.path.join(img_dir, images[stem])
            ann_path = os.path.join(ann_dir, labels[stem])
            img = cv2.imread(img_path, cv2.IMREAD_COLOR)
            ann = cv2.imread(ann_path, cv2.IMREAD_UNCHANGED)
            if img is None:
                problems.append(Problem(f'{img_path}: unreadable image', 'unreadable image'))
                continue
            if ann is None:
                problems.append(Problem(f'{ann_path}: unreadable annotation',
                                        'unreadable annotation'))
                continue
            if ann.ndim != 2:
                problems.append(Problem(f'{ann_path}: annotation must be single-channel, has '
                                        f'shape {ann.shape}', 'multi-channel annotation'))
                continue
            if ann.shape != img.shape[:2]:
                problems.append(Problem(f'{ann_path}: size {ann.shape} differs from the image '
                                        f'{img.shape[:2]}', 'annotation size'))
            bad = bad_label_values(ann, ADE_MAX_LABEL + 1)
            if bad:
                problems.append(Problem(f'{ann_path}: label values {bad} outside '
                                        f'0-{ADE_MAX_LABEL}', 'label values'))
        if log:
            log(f'{split}: {len(images)} images, {len(labels)} annotations')
            warning = split_size_warning('ade20k', split, len(images))
            if warning:
                log(warning)
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


def _check_bbox(ann: dict, height: int, width: int) -> Tuple[str, str]:
    """('', '') for a box inside the image, else (kind, message)."""
    if 'bbox' not in ann:
        return 'no bbox', "no 'bbox' key (mmdet needs one [x, y, w, h] per annotation)"
    box = ann['bbox']
    if not isinstance(box, (list, tuple)) or len(box) != 4 or \
            not all(isinstance(v, (int, float)) for v in box):
        return 'malformed bbox', f'bbox {box!r} is not 4 numbers [x, y, w, h]'
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return 'empty bbox', f'bbox {list(box)} is empty (width or height <= 0)'
    if x < 0 or y < 0 or x + w > width + 1 or y + h > height + 1:
        return 'bbox outside the image', (f'bbox {list(box)} outside the image '
                                          f'({width}x{height})')
    return '', ''


def check_coco(root: str, verbose: bool = False, every: int = PROGRESS_EVERY) -> List[str]:
    """Problems of a COCO-2017-style instance dataset (empty list: all good); ``verbose``:
    progress, counts and split-size warnings on stdout."""
    problems: List[str] = []
    log = _log(verbose)
    for split in COCO_SPLITS:
        ann_file = os.path.join(root, 'annotations', f'instances_{split}.json')
        img_dir = os.path.join(root, split)
        if log:
            log(f'{split}: reading {ann_file}')
        try:
            with open(ann_file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            problems.append(Problem(f'{ann_file}: cannot read ({err})', 'unreadable file'))
            continue
        missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
        if missing:
            problems.append(Problem(f'{ann_file}: missing keys {missing}', 'missing keys'))
            continue
        cat_ids = [c['id'] for c in data['categories']]
        if len(set(cat_ids)) != len(cat_ids):
            problems.append(Problem(f'{ann_file}: duplicate category ids', 'duplicate ids'))
        images = {}
        progress = Progress(split, len(data['images']), every, log)
        for img in data['images']:
            progress.step()
            images[img['id']] = img
            path = os.path.join(img_dir, img['file_name'])
            if not os.path.isfile(path):
                problems.append(Problem(f'{path}: image {img["id"]} listed in {ann_file} is '
                                        'missing', 'missing image'))
                continue
            shape = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if shape is None:
                problems.append(Problem(f'{path}: unreadable image', 'unreadable image'))
            elif shape.shape[:2] != (img['height'], img['width']):
                problems.append(Problem(f'{path}: size {shape.shape[:2]} differs from the '
                                        f'listed ({img["height"]}, {img["width"]})',
                                        'image size'))
        for ann in data['annotations']:
            where = f'{ann_file}: annotation {ann.get("id")}'
            img = images.get(ann.get('image_id'))
            if img is None:
                problems.append(Problem(f'{where}: unknown image_id {ann.get("image_id")}',
                                        'unknown image_id'))
                continue
            if ann.get('category_id') not in cat_ids:
                problems.append(Problem(f'{where}: unknown category_id '
                                        f'{ann.get("category_id")}', 'unknown category_id'))
            kind, error = _check_bbox(ann, img['height'], img['width'])
            if error:
                problems.append(Problem(f'{where}: {error}', kind))
            error = _check_segmentation(ann.get('segmentation'), img['height'], img['width'])
            if error:
                problems.append(Problem(f'{where}: {error}', 'segmentation'))
        if log:
            log(f'{split}: {len(data["images"])} images, {len(data["annotations"])} '
                f'annotations, {len(cat_ids)} categories')
            warning = split_size_warning('coco', split, len(data['images']))
            if warning:
                log(warning)
    return problems


CHECKS: Dict[str, Callable[..., List[str]]] = dict(ade20k=check_ade20k, coco=check_coco)
