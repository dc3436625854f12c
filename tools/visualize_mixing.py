#!/usr/bin/env python
"""A MixedAE step on one group of images, as one PNG.

    python tools/visualize_mixing.py CONFIG [--checkpoint work_dirs/mixedae/epoch_300.pth] \\
        --images a.jpg b.jpg c.jpg d.jpg --out mixing.png

Row 1: the mixed input, then the G source images. Row 2: each image's own (visible) patches.
Row 3: each image's reconstruction (predicted patches, visible patches pasted back). Without a
checkpoint the model is randomly initialised.
"""
import argparse
import glob
import os
import sys

import torch

from mixedae.models.utils.mixing import sample_assignment
from mixedae.models.utils.patches import patchify, unpatchify
from mixedae.utils.checkpoint import load_checkpoint_file, state_dict_of
from mixedae.visualization import (build_pretrain_model, denormalize, load_images, make_grid,
                                   normalize, save_png)


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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, cfg = build_pretrain_model(args.config)
    g = model.group_size
    if g < 2:
        raise SystemExit(f'{args.config}: group_size is {g}; mixing needs at least 2')
    if args.checkpoint:
        model.load_state_dict(state_dict_of(load_checkpoint_file(args.checkpoint),
                                            args.checkpoint))
    paths = args.images or sorted(glob.glob(os.path.join(args.image_dir or '', '*')))[:g]
    if len(paths) != g:
        raise SystemExit(f'need exactly G = {g} images, got {len(paths)}')
    size = tuple(model.backbone.patch_embed.img_size)
    grid = tuple(model.backbone.patch_embed.grid_size)
    p = model.patch_size
    mean, std = cfg.model.data_preprocessor['mean'], cfg.model.data_preprocessor['std']
    x = normalize(load_images(paths, size), mean, std)
    assign = sample_assignment(1, model.num_patches, g,
                               generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        out = model.reconstruct_mixed(x, assign, torch.zeros(1, dtype=torch.long))
    patches = patchify(x, p)                                          # G x N x P
    positions = torch.arange(model.num_patches)
    mixed = unpatchify(patches[assign[0], positions][None], p, grid)
    visible = out['visible'].unsqueeze(-1)                            # G x N x 1
    pred = out['pred']
    if model.norm_pix_loss:   # predictions are per-patch normalised: use the target's stats
        target = out['target']
        pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
    recon = torch.where(visible, patches, pred)
    own = torch.where(visible, patches, torch.zeros_like(patches))   # masked = mean colour
    to_img = lambda t: denormalize(unpatchify(t, p, grid), mean, std)  # noqa: E731
    originals, owns, recons = to_img(patches), to_img(own), to_img(recon)
    rows = [[denormalize(mixed, mean, std)[0]] + list(originals),
            [None] + list(owns), [None] + list(recons)]
    labels = ['mixed input'] + [f'image {i + 1}' for i in range(g)]
    save_png(args.out, make_grid(rows, args.tile, labels=labels))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
