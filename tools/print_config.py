#!/usr/bin/env python
"""Print a config as the tools resolve it: inheritance, --cfg-options and the work dir applied.

    .venv/bin/python tools/print_config.py CONFIG [--cfg-options KEY=VALUE ...] [--out FILE.py]

The same loading as tools/train.py (so the same refusals: an override key that would change
nothing, a misspelt top-level key); --out writes the resolved config as a config file.
"""
import argparse

from mmengine.config import DictAction

from mixedae.apis.config import load_config
from mixedae.utils.cli import run_tool
from mixedae.utils.io import atomic_write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='as tools/train.py --work-dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, KEY=VALUE (as tools/train.py)')
    parser.add_argument('--out', help='also write the resolved config here')
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, 'none', args.work_dir)
    text = cfg.pretty_text
    print(text)
    if args.out:
        with atomic_write(args.out) as f:
            f.write(text + '\n')
    return 0


if __name__ == '__main__':
    run_tool(main)
