"""A run's config: read, overridden (``--cfg-options``) and checked before anything is built.

:func:`load_config` is the one loader of tools/train.py, tools/test.py, tools/print_config.py
and the suite; it refuses overrides that would change nothing and model fields that would fail
deep inside the model's construction. :func:`check_schedule` refuses a schedule that does not
fit a shortened run.
"""
from __future__ import annotations

import difflib
import inspect
import os.path as osp
from typing import Any, Iterator, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mixedae.utils.errors import InvalidInputError, MissingInputError
from .hooks import add_vis_backend


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str], vis_backends: Sequence[str] = ()) -> Config:
    """Read a config, apply ``--cfg-options``, the launcher, the work dir and the visualizer
    backends of ``--tensorboard`` / ``--wandb`` / ``--mlflow``
    (:data:`mixedae.apis.hooks.VIS_BACKENDS`).

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
