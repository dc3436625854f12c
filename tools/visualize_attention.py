#!/usr/bin/env python
"""Last-layer class-token attention of one or more checkpoints, overlaid on images (one PNG).

    .venv/bin/python tools/visualize_attention.py CONFIG --checkpoint MAE=work_dirs/mae/epoch_300.pth \\
        --checkpoint MixedAE=work_dirs/mixedae/epoch_300.pth --images a.jpg b.jpg --out att.png

CONFIG is the pretraining config that gives the architecture; each checkpoint is a pretraining
checkpoint or a converted backbone. Rows are images; columns the input, then one attention map
per checkpoint (mean over heads; the layout is chosen here). Non-square images are
centre-cropped to the input size, not stretched; --image-dir skips the --out file.
"""
import argparse

from mmengine.config import DictAction

from mixedae.suite.figures import (attention_figure, list_images, load_images,
                                   normalization_of, save_png, vit_from_pretrain_config)
from mixedae.utils.cli import labelled, run_tool
from mixedae.utils.errors import MissingInputError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='pretraining config (architecture, normalisation)')
    p.add_argument('--checkpoint', action='append', required=True, metavar='LABEL=PATH')
    p.add_argument('--images', nargs='+', help='image files')
    p.add_argument('--image-dir', help='take the first --num images of this folder instead')
    p.add_argument('--num', type=int, default=4)
    p.add_argument('--size', type=int, help='input size (default: the config img_size)')
    p.add_argument('--tile', type=int, default=128)
    p.add_argument('--out', default='attention.png')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='config overrides')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    named = [(name, vit_from_pretrain_config(args.config, path, args.cfg_options))
             for name, path in (labelled(item, '--checkpoint') for item in args.checkpoint)]
    paths = args.images or list_images(args.image_dir or '.', args.num, exclude=[args.out])
    if not paths:
        raise MissingInputError(f'no images in {args.image_dir or "."}: give --images or '
                                '--image-dir')
    size = (args.size,) * 2 if args.size else tuple(named[0][1].patch_embed.img_size)
    mean, std = normalization_of(args.config, args.cfg_options)
    save_png(args.out, attention_figure(named, load_images(paths, size), mean, std, args.tile))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
