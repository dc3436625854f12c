"""The command-line flags tools/train.py and tools/test.py share (``--cfg-options``, the
logging backends, ``--allow-partial``, ``--launcher``, torchrun's ``--local-rank``)."""
from __future__ import annotations

import argparse
import os

from mmengine.config import DictAction

from .hooks import VIS_BACKENDS


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--tensorboard`` / ``--wandb`` / ``--mlflow``, ``--allow-partial``,
    ``--launcher`` and torchrun's
    ``--local-rank`` (tools/train.py and tools/test.py)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.backbone.drop_path_rate=0.2')
    for name, (backend, package, _) in VIS_BACKENDS.items():
        parser.add_argument(f'--{name}', action='store_true',
                            help=f'also log to {backend[:-len("VisBackend")]} (needs the '
                            f'{package} package)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='load a checkpoint (load_from, the test checkpoint) that does not '
                        'cover the model: matching keys only, the mismatch logged as a warning')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then export the local rank (MMEngine reads ``LOCAL_RANK``); ``vis_backends``
    lists the visualizer flags given."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    args.vis_backends = [name for name in VIS_BACKENDS if getattr(args, name)]
    return args
