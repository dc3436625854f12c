#!/usr/bin/env python
"""Last-layer class-token attention of one or more checkpoints, overlaid on images (one PNG).

    python tools/visualize_attention.py CONFIG --checkpoint MAE=work_dirs/mae/epoch_300.pth \\
        --checkpoint MixedAE=work_dirs/mixedae/epoch_300.pth --images a.jpg b.jpg --out att.png

CONFIG is the pretraining config that gives the architecture; each checkpoint is a pretraining
checkpoint or a converted backbone. Rows are images; columns the input, then one attention map
per checkpoint (mean over heads), as in the paper's Figure 5.
"""
import argparse
import glob
import os
import sys

import torch

from mixedae.visualization import (cls_attention_maps, load_images, make_grid, normalize,
                                   overlay, save_png, vit_from_pretrain_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='pretraining config (architecture, normalisation)')
    p.add_argument('--checkpoint', action='append', required=True, metavar='NAME=PATH')
    p.add_argument('--images', nargs='+', help='image files')
    p.add_argument('--image-dir', help='take the first --num images of this folder instead')
    p.add_argument('--num', type=int, default=4)
    p.add_argument('--size', type=int, help='input size (default: the config img_size)')
    p.add_argument('--tile', type=int, default=128)
    p.add_argument('--out', default='attention.png')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    named = []
    for item in args.checkpoint:
        name, sep, path = item.partition('=')
        if not sep or not path:
            raise SystemExit(f'--checkpoint {item!r}: expected NAME=PATH')
        named.append((name, vit_from_pretrain_config(args.config, path)))
    paths = args.images or sorted(glob.glob(os.path.join(args.image_dir or '', '*')))[:args.num]
    if not paths:
        raise SystemExit('no images: give --images or --image-dir')
    vit = named[0][1]
    size = (args.size,) * 2 if args.size else tuple(vit.patch_embed.img_size)
    images = load_images(paths, size)
    from mmengine.config import Config
    pre = Config.fromfile(args.config).model.data_preprocessor
    x = normalize(images, pre['mean'], pre['std'])
    maps = [cls_attention_maps(model, x).numpy() for _, model in named]
    rows = [[img] + [overlay(img, m[i]) for m in maps] for i, img in enumerate(images)]
    save_png(args.out, make_grid(rows, args.tile, labels=['input'] + [n for n, _ in named]))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    with torch.no_grad():
        sys.exit(main())
