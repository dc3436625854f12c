#!/usr/bin/env python
"""Generate the built-in benchmark data: one set of seeded scenes in three views.

    .venv/bin/python tools/make_synthetic_data.py [OUT=data/synthetic] [--num-train 600] [--num-val 100]
                                        [--size 64] [--seed 0] [--family 4] [--replace]

Writes OUT/pretrain (unlabelled training images), OUT/ade (ADE20K layout) and OUT/coco (COCO
2017 instances), then checks the last two with mixedae.datasets.checks. Scenes come in
families of --family consecutive scenes (per split, in file order) that share background and
lighting and differ in their objects, layout and part of the background
(mixedae.datasets.synthetic). The tiny configs read these paths by default. OUT must be empty:
--replace deletes an earlier generated data set there first. OUT/manifest.json, written last,
records what was generated; tools/train.py and tools/test.py refuse a folder whose files no
longer match it.
"""
import argparse
import sys

from mixedae.datasets.checks import check_ade20k, check_coco
from mixedae.datasets.synthetic import DEFAULT_FAMILY, SHAPE_CLASSES, write_dataset
from mixedae.utils.cli import run_tool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', nargs='?', default='data/synthetic')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, default=64, help='square image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--family', type=int, default=DEFAULT_FAMILY,
                        help='consecutive scenes sharing one look (1: each scene its own)')
    parser.add_argument('--replace', action='store_true',
                        help='delete the data set already in OUT (only generated files) first')
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1 or args.size < 16 or args.family < 1:
        parser.error('need --num-train >= 1, --num-val >= 1, --size >= 16 and --family >= 1')
    views = write_dataset(args.out, args.num_train, args.num_val, (args.size, args.size),
                          args.seed, replace=args.replace, family=args.family)
    problems = check_ade20k(views['ade20k']) + check_coco(views['coco'])
    for p in problems:
        print(p, file=sys.stderr)
    print(f'wrote {args.num_train} train + {args.num_val} val scenes ({args.size}px, seed '
          f'{args.seed}, families of {args.family}, {len(SHAPE_CLASSES)} classes) to '
          f'{", ".join(views.values())}; {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    run_tool(main)
