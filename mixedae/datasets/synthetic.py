"""Seeded synthetic scenes: objects of a few shape classes with their own colours and
textures, at random sizes and positions, overlapping (later objects occlude earlier ones).

Scenes come in families of ``family`` consecutive scenes (default :data:`DEFAULT_FAMILY`, the
demo's G) that share one look (:func:`draw_look`): a background, either a procedural texture
(random plane waves and smooth noise through a random 3-colour palette) or a randomly rotated,
scaled and sheared crop of one of scikit-image's bundled photographs, mirror-tiled into a
seamless periodic canvas; and one lighting, a channel mix, colour cast, brightness gradient
and offset. Each scene takes its own window of that canvas and draws its own objects, so the
scenes of a family share their colour statistics: mixing the scenes of one family (as
MixedAE mixes consecutive images) leaves nothing for colour alone to sort
(``tools/measure_hr_acc.py`` reports the no-learning colour selectors), while the objects,
their layout and each scene's part of the background are its own. Each scene comes with exact
per-instance visible masks, from which the dataset writers derive segmentation labels and
instance annotations that agree pixel for pixel.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mixedae.utils.errors import OutputExistsError
from mixedae.utils.io import write_json
from .checks import is_data_file
from .validation import DataError

#: (name, base RGB colour) of each object class; class k is written as label k + 1 in ADE20K
#: format (0 = background / "other") and as category id k + 1 in COCO format.
SHAPE_CLASSES: List[Tuple[str, Tuple[int, int, int]]] = [
    ('disc', (220, 60, 50)),
    ('square', (40, 160, 70)),
    ('triangle', (50, 90, 220)),
    ('cross', (230, 200, 40)),
    ('bar', (170, 60, 200)),
]


@dataclass
class Instance:
    category: int        # index into SHAPE_CLASSES
    mask: np.ndarray     # H x W bool, the visible (unoccluded) pixels


#: natural photographs that ship inside scikit-image (no download), used as backgrounds.
BACKGROUND_IMAGES = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
                     'motorcycle_left.png', 'hubble_deep_field.jpg', 'brick.png', 'grass.png',
                     'gravel.png', 'camera.png', 'coins.png')


@lru_cache(maxsize=1)
def _background_pool() -> Tuple[np.ndarray, ...]:
    import skimage.data
    folder = os.path.dirname(skimage.data.__file__)
    pool = []
    for name in BACKGROUND_IMAGES:
        img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f'scikit-image sample image missing: {folder}/{name}')
        pool.append(img[..., ::-1])                                    # BGR -> RGB
    return tuple(pool)


def _photo_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a scikit-image sample photograph, randomly rotated, scaled and
    sheared, then resized: H x W x 3 float."""
    pool = _background_pool()
    img = pool[int(rng.integers(len(pool)))]
    ih, iw = img.shape[:2]
    side = int(rng.uniform(0.25, 0.8) * min(ih, iw))
    top, left = int(rng.integers(ih - side + 1)), int(rng.integers(iw - side + 1))
    crop = cv2.resize(img[top:top + side, left:left + side], (w, h),
                      interpolation=cv2.INTER_AREA)
    warp = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-180, 180), rng.uniform(1.0, 1.6))
    warp[:, :2] = warp[:, :2] @ np.array([[1, rng.uniform(-0.3, 0.3)], [0, 1]])
    return cv2.warpAffine(crop, warp, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT).astype(np.float32)


def _texture_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural texture: a field of 1-3 random plane waves plus smooth noise, mapped
    through a palette of 3 random colours: H x W x 3 float."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    field = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(2, 14)
        field += np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle))
                        + rng.uniform(0, 2 * np.pi))
    cells = int(rng.integers(2, 9))
    noise = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    field += rng.uniform(0.5, 2.0) * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    field = (field - field.min()) / max(float(field.max() - field.min()), 1e-6)   # H x W in [0, 1]
    palette = rng.uniform(0, 255, (3, 3)).astype(np.float32)                  # 3 colours x RGB
    lo = np.clip(1 - 2 * field, 0, 1)[..., None]
    hi = np.clip(2 * field - 1, 0, 1)[..., None]
    return lo * palette[0] + (1 - lo - hi) * palette[1] + hi * palette[2]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Half procedural textures, half warped photographs: H x W x 3 float."""
    if rng.random() < 0.5:
        return _texture_background(rng, h, w)
    return _photo_background(rng, h, w)


@dataclass
class Look:
    """What the scenes of one family share: a background canvas and the lighting."""
    canvas: np.ndarray   # 2H x 2W x 3 float background, mirror-tiled: periodic and seamless
    mix: np.ndarray      # 3 x 3 channel mix
    cast: np.ndarray     # 3 per-channel gains
    light: np.ndarray    # H x W brightness gradient
    offset: float        # added to every channel


def draw_look(rng: np.random.Generator, h: int, w: int) -> Look:
    """A family's look: a background (:func:`_background`), a random channel mix near
    identity, a colour cast, a linear brightness gradient and an offset."""
    tile = _background(rng, h, w)                                           # H x W x 3
    canvas = np.concatenate([tile, tile[::-1]], axis=0)
    canvas = np.concatenate([canvas, canvas[:, ::-1]], axis=1)               # 2H x 2W x 3
    mix = np.eye(3, dtype=np.float32) + rng.normal(0, 0.25, (3, 3)).astype(np.float32)
    cast = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)) / max(h, w)
    light = 1 + rng.uniform(0, 0.6) * ramp                                   # H x W
    return Look(canvas, mix, cast, light, float(rng.uniform(-30, 30)))


def _lighting(look: Look, image: np.ndarray) -> np.ndarray:
    """The family's colour and light applied to a whole H x W x 3 float image."""
    return (image @ look.mix.T) * look.cast * look.light[..., None] + look.offset


def _shape_mask(rng: np.random.Generator, category: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(0.12, 0.35) * min(h, w)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    name = SHAPE_CLASSES[category][0]
    if name == 'disc':
        cv2.circle(mask, (int(cx), int(cy)), int(size / 2), 1, -1)
    else:
        if name == 'square':
            pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * size / 2
        elif name == 'triangle':
            pts = np.array([[0, -1], [0.87, 0.5], [-0.87, 0.5]], np.float32) * size / 1.6
        elif name == 'cross':
            a, b = 0.3, 1.0
            pts = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b],
                            [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]],
                           np.float32) * size / 2
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


def _has_hole(mask: np.ndarray) -> bool:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return bool((filled.astype(bool) != mask).any())


def _visible(masks: List[np.ndarray]) -> List[np.ndarray]:
    """Visible part of each mask when later masks are drawn on top."""
    covered = np.zeros(masks[0].shape, bool) if masks else None
    out = []
    for mask in reversed(masks):
        out.append(mask & ~covered)
        covered = covered | mask
    return out[::-1]


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int = 4,
                 tries: int = 10, look: Optional[Look] = None) -> Tuple[np.ndarray, List[Instance]]:
    """One scene: H x W x 3 uint8 RGB image and its visible instances.

    The background is an H x W window at a random offset of ``look``'s periodic canvas (the
    scene's own part of the shared background), under ``look``'s lighting; without ``look``
    the scene draws one of its own (a family of one).

    Objects overlap and occlude each other, but a placement that would leave a hole in any
    visible region is redrawn (up to ``tries`` times, then the object is skipped), so every
    instance is exactly described by outer polygons (:func:`mask_to_polygons`). Instances with
    fewer than 4 visible pixels are dropped.
    """
    look = draw_look(rng, height, width) if look is None else look
    shift = (int(rng.integers(2 * height)), int(rng.integers(2 * width)))
    image = np.roll(look.canvas, shift, axis=(0, 1))[:height, :width].copy()  # H x W x 3
    drawn: List[Tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(tries):
            category = int(rng.integers(len(SHAPE_CLASSES)))
            mask = _shape_mask(rng, category, height, width)
            visible = _visible([m for _, m in drawn] + [mask])
            if mask.any() and not any(_has_hole(v) for v in visible):
                image[mask] = _texture(rng, category, height, width)[mask]
                drawn.append((category, mask))
                break
    visible = _visible([m for _, m in drawn])
    instances = [Instance(c, v) for (c, _), v in zip(drawn, visible) if v.sum() >= 4]
    return np.clip(_lighting(look, image), 0, 255).astype(np.uint8), instances


def render_scenes(rng: np.random.Generator, count: int, height: int, width: int,
                  family: int) -> List[Scene]:
    """``count`` scenes in families of ``family`` consecutive ones sharing one look
    (:func:`draw_look`; the last family is cut short when ``family`` does not divide
    ``count``), each with its own background shift, objects and layout."""
    if family < 1:
        raise ValueError(f'family must be >= 1, got {family}')
    scenes = []
    for start in range(0, count, family):
        look = draw_look(rng, height, width)
        scenes += [render_scene(rng, height, width, look=look)
                   for _ in range(min(family, count - start))]
    return scenes


def semantic_label(instances: List[Instance], height: int, width: int) -> np.ndarray:
    """ADE20K-style label map: 0 = background, k + 1 = class k."""
    label = np.zeros((height, width), np.uint8)
    for inst in instances:
        label[inst.mask] = inst.category + 1
    return label


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons [x0, y0, x1, y1, ...] of a hole-free binary mask.

    The contour is traced on the mask upsampled 2x, so its vertices lie a quarter pixel inside
    the pixel edges; COCO's rasteriser (pixel (x, y) spans [x, x+1) x [y, y+1)) then gives back
    exactly the mask's pixels.
    """
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [((c.reshape(-1, 2) + 0.5) / 2).reshape(-1).tolist() for c in contours
            if len(c) >= 3]


Scene = Tuple[np.ndarray, List[Instance]]
#: consecutive scenes sharing one look (the demo's group size G, so that each group MixedAE
#: mixes from consecutive images is one family).
DEFAULT_FAMILY = 4
VIEWS = ('pretrain', 'ade20k', 'coco')
#: (split name of the ADE20K view, of the COCO view)
SPLITS = (('training', 'train2017'), ('validation', 'val2017'))


def _write_jpg(path: str, image: np.ndarray) -> None:
    cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def _write_ade20k_split(root: str, split: str, scenes: List[Scene]) -> None:
    img_dir = os.path.join(root, 'images', split)
    ann_dir = os.path.join(root, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i, (image, instances) in enumerate(scenes):
        name = f'ADE_{split[:5]}_{i:08d}'
        _write_jpg(os.path.join(img_dir, name + '.jpg'), image)
        cv2.imwrite(os.path.join(ann_dir, name + '.png'),
                    semantic_label(instances, *image.shape[:2]))


def _write_coco_split(root: str, split: str, scenes: List[Scene]) -> None:
    from pycocotools import mask as mask_utils
    os.makedirs(os.path.join(root, split), exist_ok=True)
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i, (image, instances) in enumerate(scenes):
        h, w = image.shape[:2]
        file_name = f'{i + 1:012d}.jpg'
        _write_jpg(os.path.join(root, split, file_name), image)
        images.append(dict(id=i + 1, file_name=file_name, height=h, width=w))
        for inst in instances:
            polygons = mask_to_polygons(inst.mask)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=inst.category + 1,
                segmentation=polygons, area=float(mask_utils.area(rle)),
                bbox=[float(v) for v in mask_utils.toBbox(rle)], iscrowd=0))
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, (name, _) in enumerate(SHAPE_CLASSES)]
    with open(os.path.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def write_dataset(root: str, num_train: int, num_val: int, size: Tuple[int, int] = (64, 64),
                  seed: int = 0, views: Sequence[str] = VIEWS, replace: bool = False,
                  family: int = DEFAULT_FAMILY) -> Dict[str, str]:
    """Render ``num_train + num_val`` scenes from ``seed`` (the training scenes, then the
    validation ones, each split in families of ``family`` consecutive scenes sharing one look,
    :func:`render_scenes`) and write views of the same scenes, numbered in scene order (files
    ``family*k .. family*k + family - 1`` of a split, in sorted order, are one family):

    - ``pretrain``: ``root/pretrain/*.jpg``, the training images without labels;
    - ``ade20k``: ``root/ade/`` in ADEChallengeData2016 layout (label k + 1 for class k);
    - ``coco``: ``root/coco/`` in COCO 2017 layout; each visible instance as polygons that COCO
      rasterises back to exactly its pixels, with ``area`` and ``bbox`` of that rasterisation
      (so the union of a class's instance masks equals its pixels in the ADE20K view).

    ``root`` must be empty or absent; ``replace`` deletes an earlier generated tree there first
    (:func:`clear_generated`). :data:`MANIFEST` is written last: what was generated, with the
    number of files in each folder. Returns the root folder of each written view.
    """
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f'unknown views {sorted(unknown)}; choose from {VIEWS}')
    if family < 1:
        raise ValueError(f'family must be >= 1, got {family}')
    clear_generated(root, replace)
    rng = np.random.default_rng(seed)
    scenes = {'train': render_scenes(rng, num_train, *size, family=family),
              'val': render_scenes(rng, num_val, *size, family=family)}
    out = {}
    if 'pretrain' in views:
        out['pretrain'] = os.path.join(root, 'pretrain')
        os.makedirs(out['pretrain'], exist_ok=True)
        for i, (image, _) in enumerate(scenes['train']):
            _write_jpg(os.path.join(out['pretrain'], f'{i:08d}.jpg'), image)
    for key, (ade_split, coco_split) in zip(('train', 'val'), SPLITS):
        if 'ade20k' in views:
            out['ade20k'] = os.path.join(root, 'ade')
            _write_ade20k_split(out['ade20k'], ade_split, scenes[key])
        if 'coco' in views:
            out['coco'] = os.path.join(root, 'coco')
            _write_coco_split(out['coco'], coco_split, scenes[key])
    write_json(dict(generator=GENERATOR, version=GENERATOR_VERSION, num_train=num_train,
                    num_val=num_val, size=list(size), seed=seed, views=list(views), family=family,
                    files=expected_files(num_train, num_val, views)),
               os.path.join(root, MANIFEST))
    return out


# ------------------------------------------------------------------------------ manifest
#: the record :func:`write_dataset` leaves in the root of what it generated.
MANIFEST = 'manifest.json'
GENERATOR = 'mixedae.datasets.synthetic'
#: bumped whenever the same arguments would render different scenes (2: families of scenes
#: sharing one look, :data:`DEFAULT_FAMILY`).
GENERATOR_VERSION = 2
#: the entries of a generated root (the views' folders and the manifest).
GENERATED_NAMES = ('pretrain', 'ade', 'coco', MANIFEST)


def expected_files(num_train: int, num_val: int, views: Sequence[str] = VIEWS
                   ) -> Dict[str, int]:
    """Number of files :func:`write_dataset` writes into each folder (relative to the root)."""
    files = {'pretrain': num_train} if 'pretrain' in views else {}
    for count, (ade_split, coco_split) in zip((num_train, num_val), SPLITS):
        if 'ade20k' in views:
            files[f'ade/images/{ade_split}'] = count
            files[f'ade/annotations/{ade_split}'] = count
        if 'coco' in views:
            files[f'coco/{coco_split}'] = count
    if 'coco' in views:
        files['coco/annotations'] = len(SPLITS)
    return files


def clear_generated(root: str, replace: bool) -> None:
    """Make sure ``root`` is empty: refuse a non-empty one, or (``replace``) delete it whole
    when it holds nothing but what :func:`write_dataset` writes."""
    entries = sorted(os.listdir(root)) if os.path.isdir(root) else []
    if not entries:
        return
    if not replace:
        raise OutputExistsError(
            f'{root} is not empty ({", ".join(entries[:5])}{", ..." if len(entries) > 5 else ""})'
            ': generating into it would mix two data sets; pass --replace to delete it and '
            'generate afresh, or choose another folder')
    foreign = [e for e in entries if e not in GENERATED_NAMES and not e.startswith(f'.{MANIFEST}.')]
    if foreign:
        raise OutputExistsError(f'--replace refused: {root} holds {foreign}, which the '
                                'generator does not write; move them or choose another folder')
    shutil.rmtree(root)


def read_manifest(root: str) -> Optional[dict]:
    """The manifest of a generated root, or None when ``root`` has none."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f'{path}: not valid JSON ({err}); regenerate the folder with '
                            f'tools/make_synthetic_data.py {root} --replace') from err
    if not isinstance(manifest, dict) or manifest.get('generator') != GENERATOR:
        return None
    return manifest


def find_generated_root(path: str, levels: int = 3) -> Optional[str]:
    """The generated root holding ``path``: ``path`` or one of its ``levels`` nearest parents
    with a manifest of this generator (None if there is none)."""
    folder = os.path.abspath(path)
    for _ in range(levels + 1):
        if read_manifest(folder) is not None:
            return folder
        folder = os.path.dirname(folder)
    return None


def regenerate_command(root: str, manifest: dict) -> str:
    """The command that writes ``root`` again as its manifest describes it (the tool writes
    every view of square scenes; other data sets are rewritten by a call of
    :func:`write_dataset`). A manifest without ``family`` (version 1, every scene its own
    look) gets family 1."""
    n, m, size, seed = (manifest[k] for k in ('num_train', 'num_val', 'size', 'seed'))
    family = manifest.get('family', 1)
    if size[0] != size[1] or tuple(manifest['views']) != VIEWS:
        return (f'mixedae.datasets.synthetic.write_dataset({root!r}, {n}, {m}, {tuple(size)}, '
                f'{seed}, {tuple(manifest["views"])}, replace=True, family={family})')
    return (f'.venv/bin/python tools/make_synthetic_data.py {root} --replace --num-train {n} '
            f'--num-val {m} --size {size[0]} --seed {seed} --family {family}')


def manifest_problems(root: str) -> List[str]:
    """How the files in a generated ``root`` differ from its manifest (one line per folder);
    [] when they match or ``root`` has no manifest. The files are counted on disk, hidden and
    temporary ones left out (:func:`~mixedae.datasets.checks.is_data_file`)."""
    manifest = read_manifest(root)
    if manifest is None:
        return []
    problems = []
    for folder, count in sorted(manifest['files'].items()):
        path = os.path.join(root, folder)
        found = len([n for n in os.listdir(path) if is_data_file(n)]) \
            if os.path.isdir(path) else 0
        if found != count:
            problems.append(f'{path}: {found} files, its {MANIFEST} lists {count}')
    return problems


def matches_manifest(root: str, num_train: int, num_val: int, size: Tuple[int, int],
                     seed: int, views: Sequence[str] = VIEWS, family: int = DEFAULT_FAMILY
                     ) -> bool:
    """Whether ``root`` holds exactly what :func:`write_dataset` would write with these
    arguments (by this generator version), according to its manifest and the files on disk."""
    manifest = read_manifest(root)
    wanted = dict(version=GENERATOR_VERSION, num_train=num_train, num_val=num_val,
                  size=list(size), seed=seed, views=list(views), family=family)
    return (manifest is not None and all(manifest.get(k) == v for k, v in wanted.items())
            and not manifest_problems(root))
