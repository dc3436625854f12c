"""What a run reads and writes, checked before the model is built: every dataset root, data
folder, annotation file and checkpoint the config names (:func:`check_inputs_exist`, all
problems at once), generated data that no longer matches its manifest, and a writable work
dir (:func:`check_work_dir`)."""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from typing import Any, Iterator, List, Tuple

from mmengine.config import Config

from mixedae.datasets.synthetic import (MANIFEST, find_generated_root, manifest_problems,
                                        read_manifest, regenerate_command)
from mixedae.utils.errors import InvalidInputError, MissingInputError


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
