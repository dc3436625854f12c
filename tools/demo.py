#!/usr/bin/env python
"""The whole benchmark, small, on the built-in generated data (`make demo`).

generate data -> pretrain MAE, MixedAE and MixedAE without segment embeddings (same budget) ->
convert -> fine-tune UperNet (ADE20K format) and Mask R-CNN (COCO format, FPN protocol) from
MAE, MixedAE and random init, over several seeds -> evaluate -> attention and mixing figures
-> OUT/report.md (per-seed values, mean +/- std, hr_acc curves, figures).

Presets: ``cpu`` (default; tiny ViT, 2 fine-tuning seeds, sized for 20 minutes on 2 cores)
and ``gpu`` (ViT-S/8 at 64 px, 4000 scenes, 3 fine-tuning seeds, bf16 autocast; one GPU).
Each method is pretrained once (seed 0). Every stage is skipped when its outputs exist
(``--force`` reruns all); an interrupted training stage resumes. The configs of every run are
written to OUT/configs. A small-scale benchmark, not the paper's protocol.
"""
import argparse
import os.path as osp

from mixedae.suite.demo import PRESETS, run_demo
from mixedae.suite.demo.report import publish_report
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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
                        help='copy the report and its figures to docs/demo_report.md, docs/demo_*.png')
    args = parser.parse_args(argv)
    suffix = '' if args.preset == 'cpu' else f'_{args.preset}'
    out = args.out or f'work_dirs/demo{suffix}'
    report = run_demo(Repo(ROOT), out, args.data or f'data/demo{suffix}', args.preset,
                      args.force)
    print(f'report: {report}')
    if args.publish:
        print(f'published: {publish_report(out, osp.join(ROOT, "docs"))}')
    return 0


if __name__ == '__main__':
    run_tool(main)
