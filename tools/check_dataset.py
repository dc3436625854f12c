#!/usr/bin/env python
"""Verify a dataset layout before a long run; every problem is reported with its file.

    .venv/bin/python tools/check_dataset.py ade20k data/ade/ADEChallengeData2016
    .venv/bin/python tools/check_dataset.py coco data/coco

The checks are ``mixedae.datasets.checks`` (what each format must satisfy is listed there).
Every image is decoded (COCO 2017: several minutes), with a progress line every --every
images; each split's image count is compared with the full dataset's (a warning, not a
problem, for a subset or generated data); the first --max-per-kind problems of each kind are
printed, then how many more there are. Exit status 0 when no problem was found, 1 otherwise
(2 when the root does not exist).
"""
import argparse
import os

from mixedae.datasets.checks import CHECKS, PROGRESS_EVERY, cap_problems
from mixedae.utils.cli import positive_int, run_tool
from mixedae.utils.errors import MissingInputError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('format', choices=sorted(CHECKS))
    parser.add_argument('root', help='dataset root')
    parser.add_argument('--every', type=positive_int, default=PROGRESS_EVERY,
                        help='images between two progress lines (default %(default)s)')
    parser.add_argument('--max-per-kind', type=int, default=5,
                        help='problems printed of each kind, 0 for all (default %(default)s)')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise MissingInputError(f'{args.root}: dataset root not found')
    problems = CHECKS[args.format](args.root, verbose=True, every=args.every)
    for line in cap_problems(problems, args.max_per_kind):
        print(line)
    print(f'{args.format} at {args.root}: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    run_tool(main)
