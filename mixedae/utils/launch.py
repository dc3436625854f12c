"""Config set-up shared by tools/train.py and tools/test.py."""
from __future__ import annotations

import argparse
import importlib.util
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, DictAction


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str], tensorboard: bool = False) -> Config:
    """Read a config, apply ``--cfg-options``, the launcher, the work dir and ``--tensorboard``.

    Work dir: ``work_dir``, else the config's, else ``./work_dirs/<config name>``. Without a
    GPU, distributed runs use gloo and DDP wraps the CPU model without device ids, so
    ``dist_train.sh`` / ``dist_test.sh`` also work on CPU machines.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    if tensorboard and importlib.util.find_spec('tensorboard') is None:
        raise ImportError("--tensorboard needs the tensorboard package: .venv/bin/pip install "
                          "-e '.[tensorboard]'")
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(path))[0])
    if not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        if launcher != 'none':
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    if tensorboard:
        add_tensorboard(cfg)
    return cfg


def add_tensorboard(cfg: Config) -> None:
    """Add MMEngine's ``TensorboardVisBackend`` to the visualizer (event files go to
    ``<work_dir>/<timestamp>/vis_data``), keeping the backends the config has."""
    visualizer = cfg.get('visualizer') or dict(type='Visualizer', name='visualizer',
                                               vis_backends=[dict(type='LocalVisBackend')])
    backends = list(visualizer.get('vis_backends') or [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    visualizer['vis_backends'] = backends
    cfg.visualizer = visualizer


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--tensorboard``, ``--launcher`` and torchrun's ``--local-rank``
    (tools/train.py and tools/test.py)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.backbone.drop_path_rate=0.2')
    parser.add_argument('--tensorboard', action='store_true',
                        help='also log to TensorBoard (needs the tensorboard package)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then export the local rank: MMEngine reads ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def init_cpu_distributed(launcher: str) -> None:
    """Start the gloo process group for torchrun-launched CPU processes.

    MMEngine's own initialisation calls ``torch.cuda.set_device``, which fails without a GPU;
    the Runner skips it when a process group already exists.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs GPUs; on CPU use --launcher pytorch '
                         '(tools/dist_train.sh)')
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def close_distributed() -> None:
    """Destroy the process group before the interpreter exits.

    A gloo group left alive at exit can abort the process ("terminate called without an active
    exception") after the work is done, turning a finished run into a failed one.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
