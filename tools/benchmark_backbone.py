#!/usr/bin/env python
"""Transfer backbones against timm's ViT of the same size at the same input (the yardstick).

For each protocol (ADE20K UperNet, COCO protocol A, ViTDet), builds ``model.backbone`` of its
config (relative position bias, layer scale, windows, gradient checkpointing as configured) and
timm's ``VisionTransformer`` with fused attention and no relative position bias, times forward
+ backward of each, one after another in this process (warm-up, then min / median / max of the
repeats) and prints a markdown table: time per step, img/s, peak memory and the ratios to the
yardstick, with a warning line where a time ratio is noisy or rests on fewer than 3 repeats.
See mixedae/suite/speed.py.

    .venv/bin/python tools/benchmark_backbone.py --scale tiny --batch 4                 # CPU, tiny configs
    .venv/bin/python tools/benchmark_backbone.py --img-size 224 --batch 2               # CPU, ViT-B at 224
    .venv/bin/python tools/benchmark_backbone.py --device cuda --amp --batch 16         # 512 / 1024 px
"""
import argparse
import json
import os.path as osp

from mixedae.suite.speed import PROTOCOLS, SCALES, benchmark_backbones
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool
from mixedae.utils.io import atomic_write

REPO = Repo(osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--protocols', nargs='+', choices=PROTOCOLS, default=list(PROTOCOLS))
    p.add_argument('--scale', choices=SCALES, default='base',
                   help='base: the ViT-B configs; tiny: the tiny CPU configs')
    p.add_argument('--img-size', type=int,
                   help="square input size (default: each config's training size)")
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--out', help='also write the results as JSON here')
    args = p.parse_args(argv)
    results, report = benchmark_backbones(
        REPO, args.protocols, args.scale, args.img_size, args.batch, args.device, args.amp,
        args.warmup, args.repeats)
    print(report)
    if args.out:
        with atomic_write(args.out) as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)
    return 0


if __name__ == '__main__':
    run_tool(main)
