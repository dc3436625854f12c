#!/usr/bin/env python
"""Verify a dataset layout before a long run; every problem is reported with its file.

    .venv/bin/python tools/check_dataset.py ade20k data/ade/ADEChallengeData2016
    .venv/bin/python tools/check_dataset.py coco data/coco

The checks are ``mixedae.datasets.checks`` (what each format must satisfy is listed there).
Exit status 0 when no problem was found, 1 otherwise (2 when the root does not exist).
"""
import argparse
import os

from mixedae.datasets.checks import CHECKS
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import MissingInputError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('format', choices=sorted(CHECKS))
    parser.add_argument('root', help='dataset root')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise MissingInputError(f'{args.root}: dataset root not found')
    problems = CHECKS[args.format](args.root, verbose=True)
    for p in problems:
        print(p)
    print(f'{args.format} at {args.root}: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    run_tool(main)
