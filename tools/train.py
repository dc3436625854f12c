#!/usr/bin/env python
"""Train with a config: MixedAE/MAE pretraining, ADE20K segmentation or COCO detection.

    .venv/bin/python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [--amp-dtype DTYPE]]
                          [--auto-scale-lr] [--compile] [--allow-partial] [--load-backbone CKPT]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

The config decides the task; one script serves all three. Multi-GPU: tools/dist_train.sh.
Every data root, annotation file and checkpoint the config names is checked before the model
is built; a ``load_from`` checkpoint must cover the model unless ``--allow-partial`` is given.
The full-scale configs train in bf16 autocast; --amp switches a fp32 config (or picks the
dtype) through mixedae.AmpOptimWrapper. Without a GPU, --amp means bf16 autocast on CPU.
--compile runs the training step under torch.compile (MMEngine's ``compile=True``); the top-K
attention kernel is a torch custom op, which torch.compile traces without a graph break.
SIGTERM or SIGUSR1 (Slurm's preemption and time-limit warnings) make the run finish its
iteration, save a checkpoint and exit with status 75; the same command plus --resume continues
it bit-exactly (docs/usage.md, "Preemption").
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.runner import Runner

from mixedae.apis.args import add_launch_args, parse_launch_args
from mixedae.apis.config import check_schedule, load_config
from mixedae.apis.distributed import close_distributed, init_cpu_distributed
from mixedae.apis.hooks import add_preemption, require_full_checkpoint
from mixedae.apis.inputs import check_inputs_exist, check_work_dir
from mixedae.engine.hooks.preemption_hook import EXIT_PREEMPTED, Preempted
from mixedae.engine.optimizers.amp_optim_wrapper import AMP_DTYPES, configure_amp
from mixedae.models.backbones.loading import set_backbone_checkpoint
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import InvalidInputError, MissingInputError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (mixedae.AmpOptimWrapper)')
    parser.add_argument('--amp-dtype', choices=AMP_DTYPES,
                        help="dtype of --amp, which it implies (default: the config's, else "
                        'bfloat16); float16 needs a GPU and uses dynamic loss scaling')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale lr by the actual total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--load-backbone', metavar='CKPT',
                        help='start the backbone from CKPT (a backbone checkpoint from '
                        'tools/convert_checkpoint.py): model.backbone.init_cfg = '
                        "dict(type='Pretrained', checkpoint=CKPT), checked with the other "
                        'inputs before the model is built')
    parser.add_argument('--compile', action='store_true',
                        help="torch.compile the training step (MMEngine's compile=True); the "
                        'first iterations are slow while it compiles')
    add_launch_args(parser)
    return parse_launch_args(parser, argv)


def build_config(args) -> Config:
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir,
                      args.vis_backends)
    if args.amp or args.amp_dtype:
        print(configure_amp(cfg, args.amp_dtype), flush=True)
    if args.resume == 'auto':
        if not osp.isfile(osp.join(cfg.work_dir, 'last_checkpoint')):
            raise MissingInputError(f'--resume: nothing to resume in {cfg.work_dir} (it has no '
                                    'last_checkpoint); run without --resume to start anew, or '
                                    'name the checkpoint: --resume PATH')
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.isfile(args.resume):
            raise MissingInputError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise InvalidInputError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                                    'config')
        cfg.auto_scale_lr.enable = True
    if args.compile:
        cfg.compile = True
    if args.load_backbone:
        set_backbone_checkpoint(cfg, args.load_backbone)
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    check_schedule(cfg)
    check_inputs_exist(cfg, 'train')
    check_work_dir(cfg)
    require_full_checkpoint(cfg, args.allow_partial)
    add_preemption(cfg)
    init_cpu_distributed(args.launcher)
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
        status = 0
    except Preempted as stop:
        print(stop, file=sys.stderr, flush=True)
        status = EXIT_PREEMPTED
    return close_distributed(status)


if __name__ == '__main__':
    run_tool(main)
