#!/usr/bin/env python
"""Pretraining cost of MAE, naive mixing and MixedAE with the same backbone and batch.

Times forward + backward of the models built from the pretraining configs (warm-up steps, then
min / median / max of the repeats), one after another in this process, and prints a markdown
table: time per step, images/s, TFLOP per step (torch's FlopCounterMode), achieved TFLOP/s, MFU against
--peak-tflops (when given), peak memory and the ratio to MAE, with a warning line under the
table where a ratio is noisy or rests on fewer than 3 repeats. The steps do not compute hr_acc
(training computes it only on the iterations it logs) unless --hr-acc. See
mixedae/suite/speed.py.

    .venv/bin/python tools/benchmark_pretrain.py --arch base --batch 16 --device cpu
    .venv/bin/python tools/benchmark_pretrain.py --arch base --batch 256 --device cuda --amp --peak-tflops 989
"""
import argparse
import json
import os.path as osp

from mixedae.suite.speed import PRETRAIN_ARCHS, PRETRAIN_METHODS, benchmark_pretrain
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool
from mixedae.utils.io import atomic_write

REPO = Repo(osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', choices=PRETRAIN_ARCHS, default='base')
    p.add_argument('--batch', type=int, default=16, help='images per step (divisible by G = 4)')
    p.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--methods', nargs='+', choices=PRETRAIN_METHODS, default=list(PRETRAIN_METHODS))
    p.add_argument('--peak-tflops', type=float,
                   help="the device's peak dense TFLOP/s in the step's precision: adds MFU")
    p.add_argument('--hr-acc', action='store_true',
                   help="compute MixedAE's hr_acc on every step (training: on logged steps only)")
    p.add_argument('--out', help='also write the results as JSON here')
    args = p.parse_args(argv)
    results, report = benchmark_pretrain(
        REPO, args.methods, args.arch, args.batch, args.device, args.amp, args.warmup, args.repeats,
        args.peak_tflops, args.hr_acc)
    print(report)
    if args.out:
        with atomic_write(args.out) as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)
    return 0


if __name__ == '__main__':
    run_tool(main)
