#!/usr/bin/env python
"""Verify a dataset layout before a long run; every problem is reported with its file.

    python tools/check_dataset.py ade20k data/ade/ADEChallengeData2016

ADE20K: images/{training,validation}/*.jpg paired with annotations/{...}/*.png of the same
size and stem, label values 0-150 (0 = other, ignored in training).
Exit status 0 when no problem was found, 1 otherwise.
"""
import argparse
import os
import sys
from typing import List

import cv2
import numpy as np

ADE_SPLITS = ('training', 'validation')
ADE_MAX_LABEL = 150
IMG_EXT = ('.jpg', '.jpeg', '.png')


def _stems(folder: str, exts) -> dict:
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
        images, labels = _stems(img_dir, IMG_EXT), _stems(ann_dir, ('.png',))
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
            bad = np.unique(ann[ann > ADE_MAX_LABEL])
            if bad.size:
                problems.append(f'{ann_path}: label values {bad.tolist()} outside 0-'
                                f'{ADE_MAX_LABEL}')
        if verbose:
            print(f'{split}: {len(images)} images, {len(labels)} annotations')
    return problems


CHECKS = dict(ade20k=check_ade20k)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('format', choices=sorted(CHECKS))
    parser.add_argument('root', help='dataset root')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f'{args.root}: dataset root not found', file=sys.stderr)
        return 1
    problems = CHECKS[args.format](args.root, verbose=True)
    for p in problems:
        print(p)
    print(f'{args.format} at {args.root}: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
