"""What a run adds to its config beyond the file: the strict-load and preemption hooks of
tools/train.py and tools/test.py, and the visualizer backends of ``--tensorboard`` /
``--wandb`` / ``--mlflow``."""
from __future__ import annotations

import importlib.util

from mmengine.config import Config

from mixedae.utils.errors import InvalidInputError


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
