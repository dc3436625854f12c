#!/usr/bin/env python
"""The whole benchmark, small, on the built-in generated data (`make demo`).

generate data -> pretrain MAE, naive mixing, MixedAE (MAE's initialisation), MixedAE with the
tied q/k start and MixedAE without segment embeddings, same budget, over several seeds ->
convert -> hr_acc of the untrained and pretrained encoders -> linear probe of every encoder and
of random init (ADE20K format) -> fine-tune UperNet (and, on the gpu preset, Mask R-CNN) ->
attention and mixing figures -> OUT/report.md (intervals over pretraining seeds).

Presets: ``cpu`` (default; tiny ViT, sized for 2 CPU cores; the wall times of a run are in
its report, the published one in docs/demo_report.md) and ``gpu`` (ViT-S/8 at 64 px, bf16
autocast, one GPU; warns when none is visible). Every stage is skipped when its outputs exist
(``--force`` reruns all); an interrupted training stage resumes. The configs of every run are
written to OUT/configs. A small-scale benchmark, not the paper's protocol.
"""
import argparse
import os.path as osp
import sys

import torch

from mixedae.suite.demo import PRESETS, run_demo
from mixedae.suite.demo.report import publish_report
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool

REPO = Repo(osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu',
                        help='scale of the demo (default: cpu)')
    parser.add_argument('--out', help='work and report folder (default: work_dirs/demo, or '
                        'work_dirs/demo_<preset> for other presets)')
    parser.add_argument('--data', help='generated data folder, regenerated when it does not hold '
                        "the preset's data set (default: data/demo, or data/demo_<preset>)")
    parser.add_argument('--force', action='store_true', help='delete earlier results and rerun')
    parser.add_argument('--publish', action='store_true',
                        help='copy the report and its figures to docs/demo_report.md and '
                        'docs/demo_*.png')
    args = parser.parse_args(argv)
    suffix = '' if args.preset == 'cpu' else f'_{args.preset}'
    if PRESETS[args.preset].device == 'cuda' and not torch.cuda.is_available():
        print(f'warning: preset {args.preset!r} is sized for a GPU and none is visible: it '
              'will run on the CPU, far slower than its ETA says', file=sys.stderr, flush=True)
    out = args.out or f'work_dirs/demo{suffix}'
    report = run_demo(REPO, out, args.data or f'data/demo{suffix}', args.preset,
                      args.force)
    print(f'report: {report}')
    if args.publish:
        print(f'published: {publish_report(out, REPO.path("docs"))}')
    return 0


if __name__ == '__main__':
    run_tool(main)
