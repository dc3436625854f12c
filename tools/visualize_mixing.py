#!/usr/bin/env python
"""A MixedAE step on one group of images, as one PNG.

    .venv/bin/python tools/visualize_mixing.py CONFIG [--checkpoint work_dirs/mixedae/epoch_300.pth] \\
        --images a.jpg b.jpg c.jpg d.jpg --out mixing.png [--cfg-options k=v ...]

Rows, labelled on the left: "input" (the mixed input, then the G source images), "visible"
(each image's own visible patches), "reconstruction" (each image's predicted patches, visible
patches pasted back). The checkpoint must be a pretraining checkpoint (encoder and decoder);
without one the model is randomly initialised. Non-square images are centre-cropped, not stretched.
"""
import argparse

from mmengine.config import DictAction

from mixedae.suite.figures import (build_pretrain_model, list_images, load_images,
                                   load_pretrain_weights, mixing_figure, save_png)
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import InvalidInputError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='MixedAE pretraining config (group_size > 1)')
    p.add_argument('--checkpoint', help='pretraining checkpoint (MMEngine)')
    p.add_argument('--images', nargs='+', help='G image files')
    p.add_argument('--image-dir', help='take the first G images of this folder instead')
    p.add_argument('--seed', type=int, default=0, help='seed of the mixing assignment')
    p.add_argument('--tile', type=int, default=128)
    p.add_argument('--out', default='mixing.png')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='config overrides')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, cfg = build_pretrain_model(args.config, args.cfg_options)
    g = model.group_size
    if g < 2:
        raise InvalidInputError(f'{args.config}: group_size is {g}; mixing needs at least 2')
    if args.checkpoint:
        load_pretrain_weights(model, args.checkpoint)
    paths = args.images or list_images(args.image_dir or '.', g, exclude=[args.out])
    if len(paths) != g:
        raise InvalidInputError(f'need exactly G = {g} images, got {len(paths)} (give G files '
                                'to --images, or an --image-dir with at least G)')
    images = load_images(paths, tuple(model.backbone.patch_embed.img_size))
    pre = cfg.model.data_preprocessor
    save_png(args.out, mixing_figure(model, images, pre['mean'], pre['std'], args.tile,
                                     args.seed))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
