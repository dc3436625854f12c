"""The command-line flags tools/train.py and tools/test.py share (``--cfg-options``, the
logging backends, ``--allow-partial``, ``--launcher``, torchrun's ``--local-rank``)."""
from __future__ import annotations

import argparse
import os
import warnings
from typing import Mapping

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


#: the variable holding a process's global rank, by launcher (as MMEngine's init_dist reads it)
RANK_VARIABLES = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}


def launch_rank(launcher: str, environ: Mapping[str, str]) -> int:
    """This process's global rank as its launcher set it, before the process group exists:
    ``RANK`` (torchrun), ``SLURM_PROCID`` (srun), ``OMPI_COMM_WORLD_RANK`` (mpirun); 0 for
    ``--launcher none`` or when the variable is absent."""
    name = RANK_VARIABLES.get(launcher)
    return int(environ.get(name) or 0) if name else 0


def parse_launch_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then export the local rank (MMEngine reads ``LOCAL_RANK``); ``vis_backends``
    lists the visualizer flags given. Ranks other than 0 ignore Python warnings, which repeat
    rank 0's, as MMEngine's logger shows them only errors."""
    args = parser.parse_args(argv)
    if launch_rank(args.launcher, os.environ) != 0:
        warnings.simplefilter('ignore')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    args.vis_backends = [name for name in VIS_BACKENDS if getattr(args, name)]
    return args
