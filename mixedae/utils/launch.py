"""Config set-up shared by tools/train.py and tools/test.py."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import os.path as osp
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from mmengine.config import Config, DictAction

from mixedae.datasets.synthetic import (MANIFEST, find_generated_root, manifest_problems,
                                        read_manifest, regenerate_command)
from .errors import InvalidInputError, MissingInputError


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str], tensorboard: bool = False) -> Config:
    """Read a config, apply ``--cfg-options``, the launcher, the work dir and ``--tensorboard``.

    Work dir: ``work_dir``, else the config's, else ``./work_dirs/<config name>``. Without a
    GPU, distributed runs use gloo and DDP wraps the CPU model without device ids, so
    ``dist_train.sh`` / ``dist_test.sh`` also work on CPU machines.
    """
    if not osp.isfile(path):
        raise MissingInputError(f'config file not found: {path}')
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
    """``--cfg-options``, ``--tensorboard``, ``--allow-partial``, ``--launcher`` and torchrun's
    ``--local-rank`` (tools/train.py and tools/test.py)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.backbone.drop_path_rate=0.2')
    parser.add_argument('--tensorboard', action='store_true',
                        help='also log to TensorBoard (needs the tensorboard package)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='load a checkpoint (load_from, the test checkpoint) that does not '
                        'cover the model: matching keys only, the mismatch logged as a warning')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then export the local rank: MMEngine reads ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def init_cpu_distributed(launcher: str) -> None:
    """Start the gloo process group for CPU processes started by torchrun or by srun.

    MMEngine's own initialisation calls ``torch.cuda.set_device``, which fails without a GPU;
    the Runner skips it when a process group already exists. Under srun (``--launcher slurm``)
    the rank, world size and master address come from Slurm's variables
    (:func:`slurm_process_env`).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher not in ('pytorch', 'slurm'):
        raise InvalidInputError(f'--launcher {launcher} needs GPUs; on CPU use --launcher pytorch '
                                '(tools/dist_train.sh) or slurm (tools/slurm_train.sh)')
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.update(slurm_process_env(os.environ, first_slurm_host))
    dist.init_process_group(backend='gloo')


#: the variables srun sets for each task that --launcher slurm reads.
SLURM_TASK_VARS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST')


def slurm_process_env(environ: Mapping[str, str],
                      first_host: Callable[[str], str]) -> Dict[str, str]:
    """torch.distributed's ``env://`` variables for a task that srun started, read from Slurm's
    as MMEngine's slurm launcher reads them: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS,
    LOCAL_RANK = SLURM_LOCALID, MASTER_ADDR = the first host of SLURM_NODELIST
    (``first_host(nodelist)``) unless MASTER_ADDR is set, MASTER_PORT as set, else 29500."""
    missing = [name for name in SLURM_TASK_VARS if not environ.get(name)]
    if missing:
        raise InvalidInputError(f'--launcher slurm: {", ".join(missing)} not set; start the '
                                'processes with srun (tools/slurm_train.sh, '
                                'tools/slurm_test.sh) or use --launcher pytorch')
    return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                LOCAL_RANK=environ['SLURM_LOCALID'],
                MASTER_ADDR=environ.get('MASTER_ADDR') or first_host(environ['SLURM_NODELIST']),
                MASTER_PORT=environ.get('MASTER_PORT') or '29500')


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a Slurm node list (``node[1-4]`` -> ``node1``), by
    ``scontrol show hostnames``."""
    out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                         text=True)
    hosts = out.stdout.split()
    if out.returncode != 0 or not hosts:
        raise InvalidInputError(f'scontrol show hostnames {nodelist} failed: '
                                f'{out.stderr.strip() or "no host"}; set MASTER_ADDR to the '
                                'first node of the job')
    return hosts[0]


def close_distributed(status: int) -> int:
    """Destroy the process group after the run; ``status`` back, or, in a gloo run, the process
    ends here with it.

    torch 2.14 leaves gloo's worker threads running after ``destroy_process_group`` once a
    ``DistributedDataParallel`` wrapper has held the group (its C++ reducer is never freed).
    A worker that frees its last finished work while the interpreter shuts down needs the GIL
    and aborts the process ("terminate called without an active exception", exit -6) after
    the run's work is done. A gloo rank therefore flushes its logs and output and ends with
    ``os._exit``, skipping the interpreter's shutdown.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return status
    gloo = dist.get_backend() == 'gloo'
    dist.barrier()
    dist.destroy_process_group()
    if gloo:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _dataset_paths(dataset: dict, key: str) -> Iterator[Tuple[str, str, bool]]:
    """(config key, path, is_folder) of a dataset config and the datasets it wraps.

    Relative ``ann_file`` and ``data_prefix`` entries are joined to ``data_root`` as MMEngine's
    ``BaseDataset`` does; entries under a missing ``data_root`` are not listed separately.
    """
    if 'dataset' in dataset:
        yield from _dataset_paths(dataset['dataset'], f'{key}.dataset')
    for i, inner in enumerate(dataset.get('datasets') or []):
        yield from _dataset_paths(inner, f'{key}.datasets.{i}')
    root = dataset.get('data_root') or ''
    if root:
        yield f'{key}.data_root', root, True
        if not osp.isdir(root):
            return
    entries = [('ann_file', dataset.get('ann_file'), False)] + [
        (f'data_prefix.{k}', v, True) for k, v in (dataset.get('data_prefix') or {}).items()]
    for name, path, is_folder in entries:
        if isinstance(path, str) and path:
            yield f'{key}.{name}', path if osp.isabs(path) else osp.join(root, path), is_folder


def _checkpoints(node: Any, key: str) -> Iterator[Tuple[str, str, bool]]:
    """(config key, path, False) of every ``init_cfg`` checkpoint under a model config."""
    if isinstance(node, dict):
        if 'checkpoint' in node and str(node.get('type', '')).startswith('Pretrained'):
            yield f'{key}.checkpoint', node['checkpoint'], False
        for k, v in node.items():
            yield from _checkpoints(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _checkpoints(v, f'{key}.{i}')


def _inputs(cfg: Config, mode: str) -> List[Tuple[str, str, bool]]:
    """(config key, path, is_folder) of every dataset root, data folder, annotation file and
    checkpoint a run reads (see :func:`missing_inputs` for ``mode``)."""
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    stages = ['train', 'val'] if mode == 'train' else ['test']
    if mode == 'train' and not cfg.get('val_cfg'):
        stages.remove('val')
    entries = list(_checkpoints(cfg.get('model'), 'model'))
    for stage in stages:
        loader = cfg.get(f'{stage}_dataloader')
        if loader and loader.get('dataset'):
            entries += _dataset_paths(loader['dataset'], f'{stage}_dataloader.dataset')
        evaluators = cfg.get(f'{stage}_evaluator') or []
        for i, ev in enumerate(evaluators if isinstance(evaluators, list) else [evaluators]):
            key = f'{stage}_evaluator' + (f'.{i}' if isinstance(evaluators, list) else '')
            if isinstance(ev, dict) and isinstance(ev.get('ann_file'), str):
                entries.append((f'{key}.ann_file', ev['ann_file'], False))
    if cfg.get('load_from') and not (mode == 'train' and cfg.get('resume')):
        entries.append(('load_from', cfg.load_from, False))
    return entries


def missing_inputs(cfg: Config, mode: str) -> List[str]:
    """Every dataset root, data folder, annotation file and checkpoint of a run that is missing.

    ``mode`` is ``'train'`` (training and validation data, ``load_from`` unless resuming) or
    ``'test'`` (test data and ``load_from``); both check the model's ``init_cfg`` checkpoints.
    URLs (``scheme://``) are left to their loaders. One line per problem, config key first.
    """
    problems = []
    for key, path, is_folder in _inputs(cfg, mode):
        if '://' in path or (osp.isdir(path) if is_folder else osp.isfile(path)):
            continue
        what = 'folder' if is_folder else 'checkpoint file' if key.endswith(
            ('checkpoint', 'load_from')) else 'file'
        problems.append(f'{key}: {what} not found: {path!r}')
    return list(dict.fromkeys(problems))   # val and test loaders are often one dict


def stale_generated_data(cfg: Config, mode: str) -> List[str]:
    """One line per generated data set (a folder with the manifest of
    :func:`mixedae.datasets.synthetic.write_dataset`) the run reads whose files no longer match
    its manifest, with the command that writes it again."""
    roots = {find_generated_root(path) for _, path, is_folder in _inputs(cfg, mode)
             if is_folder and '://' not in path and osp.isdir(path)}
    problems = []
    for root in sorted(r for r in roots if r is not None):
        stale = manifest_problems(root)
        if stale:
            problems.append(f'{root} no longer matches its {MANIFEST} ({"; ".join(stale)}); '
                            f'regenerate it: {regenerate_command(root, read_manifest(root))}')
    return problems


def check_inputs_exist(cfg: Config, mode: str) -> None:
    """Raise :class:`MissingInputError` listing everything :func:`missing_inputs` finds, at once;
    then :class:`InvalidInputError` for what :func:`stale_generated_data` finds."""
    problems = missing_inputs(cfg, mode)
    if problems:
        raise MissingInputError(f'{len(problems)} input(s) named in the config are missing:\n  '
                                + '\n  '.join(problems))
    stale = stale_generated_data(cfg, mode)
    if stale:
        raise InvalidInputError('\n'.join(stale))


def require_full_checkpoint(cfg: Config, allow_partial: bool) -> None:
    """Register ``mixedae.StrictLoadHook``: a ``load_from`` that does not cover the model fails
    (``allow_partial``: it is loaded with a warning listing the mismatched keys)."""
    cfg.custom_hooks = [*cfg.get('custom_hooks', []),
                        dict(type='mixedae.StrictLoadHook', allow_partial=allow_partial)]


def add_preemption(cfg: Config) -> None:
    """Save crash-safely and stop cleanly on SIGTERM / SIGUSR1 (``tools/train.py``).

    The config's ``default_hooks.checkpoint`` (MMEngine's ``CheckpointHook``, with its
    arguments) becomes ``mixedae.AtomicCheckpointHook`` and ``mixedae.PreemptionHook`` is
    added to ``custom_hooks``.
    """
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is None:
        raise ValueError('default_hooks.checkpoint is missing from the config: preemption-safe '
                         'training saves through it')
    if checkpoint.get('type') not in ('CheckpointHook', 'mmengine.CheckpointHook',
                                      'mixedae.AtomicCheckpointHook'):
        raise ValueError(f"default_hooks.checkpoint.type is {checkpoint.get('type')!r}; "
                         "preemption-safe training needs MMEngine's 'CheckpointHook' (replaced "
                         "by 'mixedae.AtomicCheckpointHook')")
    checkpoint['type'] = 'mixedae.AtomicCheckpointHook'
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='mixedae.PreemptionHook')]
