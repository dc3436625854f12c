#!/usr/bin/env python
"""Evaluate a checkpoint with a config (ADE20K mIoU, COCO box/mask AP, ...).

    .venv/bin/python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out-metrics FILE.json]
                         [--out PATH] [--show-dir DIR] [--tta] [--allow-partial]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

``--out-metrics`` writes the final metrics as flat JSON, once. As in mmseg's and mmdet's
tools/test.py: ``--out`` keeps the raw predictions (ADE20K configs: a folder of label PNGs;
COCO configs: a .pkl file), ``--show-dir`` draws them, ``--tta`` tests with the config's
``tta_model`` / ``tta_pipeline`` (ADE20K: multi-scale 0.5-1.75 + flip). An existing ``--out``
is not written over.
The test data, annotation files and checkpoints are checked before the model is built, and the
checkpoint must cover the model (missing / unexpected keys fail the run unless
``--allow-partial`` is given).
Multi-GPU: tools/dist_test.sh.
"""
import argparse
import os.path as osp

from mmengine.dist import get_rank
from mmengine.runner import Runner

from mixedae.apis.args import add_launch_args, parse_launch_args
from mixedae.apis.config import load_config
from mixedae.apis.distributed import close_distributed, init_cpu_distributed
from mixedae.apis.hooks import require_full_checkpoint
from mixedae.apis.inputs import check_inputs_exist, check_work_dir
from mixedae.apis.test_outputs import dump_predictions, show_predictions, task_of, use_tta
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import MissingInputError
from mixedae.utils.io import write_metrics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs go (default: ./work_dirs/<config name>)')
    parser.add_argument('--out-metrics', help='write the final metrics here as flat JSON')
    parser.add_argument('--out', help='keep the raw predictions: a folder of label PNGs '
                        '(mmseg configs) or a .pkl file (mmdet configs), not written over an '
                        'existing one')
    parser.add_argument('--show-dir', help='save visualised predictions here')
    parser.add_argument('--tta', action='store_true',
                        help="test with the config's tta_model / tta_pipeline")
    add_launch_args(parser)
    return parse_launch_args(parser, argv)


def build_config(args):
    if not args.checkpoint:
        raise MissingInputError('the checkpoint argument is empty (a "$(cat '
                                'WORK_DIR/last_checkpoint)" that found no file?): give the path '
                                'of a checkpoint written by tools/train.py')
    if not osp.isfile(args.checkpoint):
        raise MissingInputError(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir,
                      args.vis_backends)
    cfg.load_from = args.checkpoint
    task = task_of(cfg, args.config)
    if args.tta:
        use_tta(cfg, args.config)
    if args.out:
        dump_predictions(cfg, args.out, task)
    if args.show_dir:
        show_predictions(cfg, args.show_dir, args.config, task)
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    check_inputs_exist(cfg, 'test')
    check_work_dir(cfg)
    require_full_checkpoint(cfg, args.allow_partial)
    init_cpu_distributed(args.launcher)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if args.out_metrics and get_rank() == 0:
        write_metrics(metrics, args.out_metrics)
    return close_distributed(0)


if __name__ == '__main__':
    run_tool(main)
