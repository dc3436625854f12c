"""Config set-up shared by tools/train.py and tools/test.py."""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import inspect
import logging
import os
import os.path as osp
import re
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mixedae.datasets.synthetic import (MANIFEST, find_generated_root, manifest_problems,
                                        read_manifest, regenerate_command)
from mixedae.utils.errors import InvalidInputError, MissingInputError


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str], vis_backends: Sequence[str] = ()) -> Config:
    """Read a config, apply ``--cfg-options``, the launcher, the work dir and the visualizer
    backends of ``--tensorboard`` / ``--wandb`` / ``--mlflow`` (:data:`VIS_BACKENDS`).

    Work dir: ``work_dir``, else the config's, else ``./work_dirs/<config name>``. Without a
    GPU, distributed runs use gloo and DDP wraps the CPU model without device ids, so
    ``dist_train.sh`` / ``dist_test.sh`` also work on CPU machines.
    """
    if not osp.isfile(path):
        raise MissingInputError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_override_keys(cfg, cfg_options, path)
        cfg.merge_from_dict(cfg_options)
    check_model_fields(cfg, path)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(path))[0])
    if not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        if launcher != 'none':
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    for name in vis_backends:
        add_vis_backend(cfg, name)
    return cfg


#: top-level fields read when the run is built: MMEngine Runner's arguments, the fields its
#: methods read from the config, and the test-time augmentation pair of mmseg and mmdet
RUNTIME_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) - {'self'} | {
    'model_wrapper_cfg', 'compile', 'activation_checkpointing', 'efficient_conv_bn_eval',
    'find_unused_parameters', 'tta_model', 'tta_pipeline'}


def check_override_keys(cfg: Config, cfg_options: dict, path: str) -> None:
    """Refuse ``--cfg-options`` keys that would change nothing: a top-level name that is neither
    in the config nor read by the Runner (a misspelling), and a config-file variable such as
    ``data_root``, which MMEngine substitutes while it parses the file, so the fields built
    from it keep the old value."""
    for key in cfg_options:
        top = key.split('.', 1)[0]
        if top in RUNTIME_KEYS:
            continue
        if top in cfg:
            hint = (' For data stored elsewhere set each dataset\'s root, e.g. '
                    'train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR '
                    'test_dataloader.dataset.data_root=DIR (docs/usage.md, "Data stored outside '
                    'data/").' if top == 'data_root' else
                    ' Override the fields that use it instead (tools/print_config.py shows the '
                    'resolved config).')
            raise InvalidInputError(f'--cfg-options {key}: {top!r} is a variable of {path}, '
                                    'substituted when the file is read; changing it afterwards '
                                    f'changes nothing.{hint}')
        close = difflib.get_close_matches(top, [*cfg.keys(), *RUNTIME_KEYS], n=1)
        raise InvalidInputError(f'--cfg-options {key}: {top!r} is not a field of {path} nor one '
                                'that MMEngine\'s Runner reads'
                                + (f'; did you mean {close[0]!r}?' if close else ''))


def _init_cfgs(node: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """(config key, value) of every ``init_cfg`` under ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == 'init_cfg':
                yield f'{key}.{k}', v
            else:
                yield from _init_cfgs(v, f'{key}.{k}')


def check_model_fields(cfg: Config, path: str) -> None:
    """Refuse, by key, model fields that would fail deep inside the model's construction: an
    ``init_cfg`` without ``type``, and mmseg's older ``model.pretrained`` (which this suite's
    backbones do not take)."""
    model = cfg.get('model') or {}
    if model.get('pretrained') is not None:
        raise InvalidInputError(f'{path}: model.pretrained={model["pretrained"]!r} is mmseg\'s '
                                'older way to start the backbone, not used here: start it with '
                                f'--load-backbone {model["pretrained"]} (tools/train.py)')
    for key, init_cfg in _init_cfgs(model, 'model'):
        for entry in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
            if isinstance(entry, dict) and 'type' not in entry:
                raise InvalidInputError(
                    f'{path}: {key} has no type: {dict(entry)!r}; e.g. '
                    f"{key}.type=Pretrained with {key}.checkpoint=PATH (a backbone "
                    'checkpoint: --load-backbone PATH sets both)')


def check_schedule(cfg: Config) -> None:
    """Refuse a parameter scheduler that begins at or after the end of training (MMEngine
    fails later with "end should be larger than begin"): a run shortened with
    ``train_cfg.max_epochs`` / ``max_iters`` keeps the config's warm-up length, so its fix is
    named here with the values to set."""
    train_cfg = cfg.get('train_cfg') or {}
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else list(schedulers)
    by_epoch_loop = 'max_epochs' in train_cfg
    for i, sched in enumerate(schedulers):
        by_epoch = sched.get('by_epoch', True)
        if by_epoch != by_epoch_loop:
            continue   # iterations per epoch are known only once the data loader is built
        unit, limit = ('epoch', train_cfg['max_epochs']) if by_epoch else (
            'iteration', train_cfg.get('max_iters'))
        begin = sched.get('begin', 0)
        if limit is None or begin < limit:
            continue
        field = 'max_epochs' if by_epoch else 'max_iters'
        # epochs converted to iterations may be fractions (MMEngine multiplies them by the
        # epoch length, which must leave at least one iteration); iterations are whole numbers
        fractional = by_epoch and sched.get('convert_to_iter_based', False)
        value = limit / 2 if fractional else max(1, limit // 10)
        raise InvalidInputError(
            f'param_scheduler[{i}] ({sched.get("type")}) begins at {unit} {begin}, but training '
            f'ends at train_cfg.{field}={limit}: the schedule (warm-up included) does not '
            'follow a shortened run. Shorten it too, e.g. --cfg-options '
            + ' '.join(f'param_scheduler.{j}.{edge}={value}' for j, s in enumerate(schedulers)
                       for edge in ('begin', 'end') if s.get(edge) == begin)
            + f' (a value above 0 and below {limit}), or train longer.')


def check_work_dir(cfg: Config) -> None:
    """Create the work dir and check that a file can be written there, before anything runs
    (MMEngine fails later, in each rank, with a traceback)."""
    try:
        os.makedirs(cfg.work_dir, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=cfg.work_dir)
    except OSError as err:
        raise InvalidInputError(f'work dir {cfg.work_dir} cannot be written ({err.strerror}); '
                                'choose another with --work-dir') from err
    probe.close()


#: ``--NAME`` flag -> (MMEngine visualizer backend, package it needs, how to install it)
VIS_BACKENDS = {
    'tensorboard': ('TensorboardVisBackend', 'tensorboard', ".venv/bin/pip install -e "
                                                            "'.[tensorboard]'"),
    'wandb': ('WandbVisBackend', 'wandb', '.venv/bin/pip install wandb (then wandb login)'),
    'mlflow': ('MLflowVisBackend', 'mlflow', '.venv/bin/pip install mlflow'),
}


def add_vis_backend(cfg: Config, name: str) -> None:
    """Add the MMEngine visualizer backend of ``--name`` (:data:`VIS_BACKENDS`; TensorBoard
    event files go to ``<work_dir>/<timestamp>/vis_data``), keeping the backends the config
    has; refused in one line when its package is not installed."""
    backend, package, install = VIS_BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        raise InvalidInputError(f'--{name} needs the {package} package: {install}')
    visualizer = cfg.get('visualizer') or dict(type='Visualizer', name='visualizer',
                                               vis_backends=[dict(type='LocalVisBackend')])
    backends = list(visualizer.get('vis_backends') or [])
    if not any(b.get('type') == backend for b in backends):
        backends.append(dict(type=backend))
    visualizer['vis_backends'] = backends
    cfg.visualizer = visualizer


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
    """The first host of a Slurm node list, as ``scontrol show hostnames`` would list it
    (``node[01-04,7],gpu1`` -> ``node01``; ``rack[1-2]-n[3-4]`` -> ``rack1-n3``): the first
    top-level item with each bracket replaced by its first value (the library starts no
    process)."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += (c == '[') - (c == ']')
        if c == ',' and depth == 0:
            end = i
            break
    item = nodelist[:end].strip()
    if not item or item.count('[') != item.count(']'):
        raise InvalidInputError(f'SLURM_NODELIST {nodelist!r} is not a Slurm node list; set '
                                'MASTER_ADDR to the first node of the job')
    return re.sub(r'\[([^\]]*)\]', lambda m: re.split(r'[-,]', m.group(1))[0], item)


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
