#!/usr/bin/env python
"""Convert a pretraining checkpoint to a ``mixedae.ViT`` backbone checkpoint.

    .venv/bin/python tools/convert_checkpoint.py IN OUT --src-format {mixedae,mae,ibot,timm,mmseg} [--key teacher]
        [--sha256 PREFIX] [--md5 PREFIX]

Prints the sha256 and md5 of IN, and with --sha256 / --md5 refuses an IN whose digest does
not start with the published prefix (docs/checkpoints.md lists the releases and their
checksums). The output loads with ``tools/train.py CONFIG --load-backbone OUT``.
"""
import argparse

from mixedae.models.backbones.checkpoint_layouts import FORMATS, convert_checkpoint
from mixedae.utils.cli import run_tool
from mixedae.utils.digest import check_digests, file_digests


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='input checkpoint')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--src-format', required=True, choices=FORMATS)
    parser.add_argument('--key', default=None,
                        help="iBOT: which network to take, 'teacher' (default) or 'student'")
    parser.add_argument('--sha256', default=None, metavar='PREFIX',
                        help='published sha256 (or its first hex digits) of the input')
    parser.add_argument('--md5', default=None, metavar='PREFIX',
                        help='published md5 (or its first hex digits) of the input')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    digests = file_digests(args.src)
    print(f'{args.src}: sha256 {digests["sha256"]} md5 {digests["md5"]}', flush=True)
    check_digests(args.src, digests, dict(sha256=args.sha256, md5=args.md5))
    kept, dropped = convert_checkpoint(args.src, args.dst, args.src_format, args.key)
    print(f'kept {kept} tensors, dropped {len(dropped)}'
          + (f' ({", ".join(dropped[:6])}{", ..." if len(dropped) > 6 else ""})' if dropped else '')
          + f'; wrote {args.dst}')
    return 0


if __name__ == '__main__':
    run_tool(main)
