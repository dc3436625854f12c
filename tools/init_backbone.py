#!/usr/bin/env python
"""Write the encoder a pretraining run starts from (step 0) as a backbone checkpoint.

    .venv/bin/python tools/init_backbone.py CONFIG OUT [--seed 0]

CONFIG is a pretraining config (MAE or MixedAE); the encoder is the one ``tools/train.py
CONFIG --cfg-options randomness.seed=SEED`` starts from, MAE's initialisation (xavier-uniform
Linears, fixed sin-cos positions). OUT loads like a converted checkpoint
(``tools/train.py TRANSFER_CONFIG --load-backbone OUT``): the "random init" row of a
comparison then starts where the pretrained encoders started.
"""
import argparse

from mixedae.suite.step0 import write_step0_backbone
from mixedae.utils.cli import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='pretraining config (MAE or MixedAE)')
    parser.add_argument('out', help='backbone checkpoint to write')
    parser.add_argument('--seed', type=int, default=0, help='the run\'s randomness.seed')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    kept = write_step0_backbone(args.config, args.seed, args.out)
    print(f'step-0 encoder of {args.config}, seed {args.seed}: {kept} tensors; wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
