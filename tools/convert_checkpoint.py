#!/usr/bin/env python
"""Convert a pretraining checkpoint to a ``mixedae.ViT`` backbone checkpoint.

    python tools/convert_checkpoint.py IN OUT --src-format {mixedae,mae,ibot,timm,mmseg} [--key teacher]

The output loads with ``--cfg-options model.backbone.init_cfg.checkpoint=OUT`` (together with
``model.backbone.init_cfg.type=Pretrained`` where the config has no init_cfg).
"""
import argparse
import os
import sys

import torch

from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file
from mixedae.utils.convert import FORMATS, extract_backbone
from mixedae.utils.io import atomic_write


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='input checkpoint')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--src-format', required=True, choices=FORMATS)
    parser.add_argument('--key', default=None,
                        help="iBOT: which network to take, 'teacher' (default) or 'student'")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        print(f'error: output {args.dst} would overwrite the input', file=sys.stderr)
        return 2
    if args.key is not None and args.src_format != 'ibot':
        print('error: --key is only meaningful with --src-format ibot', file=sys.stderr)
        return 2
    try:
        checkpoint = load_checkpoint_file(args.src)
        backbone, dropped = extract_backbone(checkpoint, args.src_format, args.src, args.key)
    except (FileNotFoundError, CheckpointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    with atomic_write(args.dst, 'wb') as f:   # a kill leaves the old output or none
        torch.save(dict(state_dict=backbone,
                        meta=dict(src_format=args.src_format, source=os.path.abspath(args.src),
                                  key=args.key)), f)
    print(f'kept {len(backbone)} tensors, dropped {len(dropped)}'
          + (f' ({", ".join(dropped[:6])}{", ..." if len(dropped) > 6 else ""})' if dropped else '')
          + f'; wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
