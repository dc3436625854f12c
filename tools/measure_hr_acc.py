#!/usr/bin/env python
"""Homologous recognition (hr_acc) of MixedAE encoders on the same images and mixed sequences.

    .venv/bin/python tools/measure_hr_acc.py CONFIG --image-dir DIR [--num 64] [--seed 0] \\
        [--checkpoint LABEL=PATH ...] [--init LABEL=SEED ...] --out OUT.json

CONFIG is a MixedAE pretraining config (G, K, top-K layers, image size, initialisation). The
first --num images of DIR (sorted names) are centre-cropped and resized to the config's image
size, normalised as its data preprocessor does, and mixed in groups of G with one assignment
drawn from --seed; each encoder runs in eval mode without gradients. hr_acc: among the patch
keys other than its own that a patch query keeps, the fraction from the query's image (class
tokens not counted), mean over the top-K layers; chance is (N/G - 1) / (N - 1).

--checkpoint LABEL=PATH loads the backbone of a pretraining checkpoint: a MixedAE one fully; a
MAE one (G = 1) loads with only the segment embeddings missing, which are set to zero (listed
under "missing_zeroed"). --init LABEL=SEED measures the config's model untrained: the encoder
``tools/train.py CONFIG`` starts from with randomness.seed SEED (mixedae.suite.step0). Two selectors without learning make the same choice on the same mixed sequences:
each patch query keeps the config's K patches nearest to it (itself included) in the mean
colour of the patch or in its raw pixels; they show how much the images' look alone gives away.
OUT.json: {LABEL: {"hr_acc": float, "per_layer": [float, ...], "source": "checkpoint PATH" |
"init seed S"[, "missing_zeroed": [keys]]}, "_chance": float, "_config": CONFIG, "_num": N,
"_seed": S, "_selectors": {"mean colour": {"hr_acc": float}, "raw pixels": {"hr_acc": float}}}.
"""
import argparse
import json
import os
from typing import List, Tuple

from mixedae.suite.hr_probe import measure_hr_acc
from mixedae.utils.cli import labelled, run_tool
from mixedae.utils.errors import InvalidInputError
from mixedae.utils.io import atomic_write


def init_seeds(items: List[str]) -> List[Tuple[str, int]]:
    """--init LABEL=SEED values -> (LABEL, SEED) pairs."""
    pairs = []
    for item in items:
        label, value = labelled(item, '--init')
        try:
            pairs.append((label, int(value)))
        except ValueError:
            raise InvalidInputError(f'--init {item!r}: SEED must be an integer') from None
    return pairs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='MixedAE pretraining config (G >= 2, top-K attention)')
    p.add_argument('--image-dir', required=True, help='folder of images (first --num used)')
    p.add_argument('--num', type=int, default=64, help='images, a multiple of G')
    p.add_argument('--seed', type=int, default=0, help='seed of the mixing assignment')
    p.add_argument('--checkpoint', action='append', default=[],
                   metavar='LABEL=PATH', help='pretraining checkpoint (MixedAE or MAE)')
    p.add_argument('--init', action='append', default=[],
                   metavar='LABEL=SEED', help="the config's model at step 0 of a run with randomness.seed SEED")
    p.add_argument('--out', required=True, help='JSON file to write')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoints = [labelled(item, '--checkpoint') for item in args.checkpoint]
    result = measure_hr_acc(args.config, args.image_dir, args.num, args.seed, checkpoints,
                            init_seeds(args.init))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=2)
    for label, entry in result.items():
        if not label.startswith('_'):
            print(f'{label}: hr_acc {entry["hr_acc"]:.4f} ({entry["source"]})')
    for name, entry in result['_selectors'].items():
        print(f'{name} (no learning): hr_acc {entry["hr_acc"]:.4f}')
    print(f'chance {result["_chance"]:.4f}; wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
