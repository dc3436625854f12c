"""Transfer results of a run matrix: the matrix file, metric collection and the command lines.

A matrix (JSON) lists the runs of the comparison and, optionally, an ablation sweep:

    {"gpus": 8, "train_args": "--amp", "scale": "ViT-B/16, full schedule",
     "runs": [{"method": "mixedae", "task": "ade20k", "config": "configs/ade20k/....py",
               "checkpoint": "pretrain/mixedae_vit-b16_backbone.pth",
               "work_dir": "work_dirs/ade20k_mixedae",
               "metrics": "work_dirs/metrics/ade_mixedae.json",
               "train_args": "--auto-scale-lr", "test_args": "", "scale": "..."}],
     "ablations": [{"name": "lam0.05", "task": "ade20k", "metrics": "work_dirs/metrics/abl_lam0.05.json"}]}

``task`` is ``ade20k`` (mIoU) or ``coco`` (box AP and mask AP). ``train_args`` / ``test_args``
(optional strings) are added to the ``dist_train.sh`` / ``dist_test.sh`` lines, the top-level
ones before each run's own. ``scale`` (optional, top level or per run) describes the size of a
run (model, data, schedule); it is shown next to the method so that a small run is never read as
a full-scale one. A run whose metrics file does not exist is reported as missing, never as zero;
a method/task pair absent from the matrix is shown as "–".
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, List, Optional, Sequence

from mixedae.utils.io import atomic_write
from .tables import ANCHOR_HEADING, COLUMNS, NOT_IN_MATRIX, markdown_table, published_rows, \
    published_sources

#: the cell of a run whose metrics file does not exist (never shown as zero)
MISSING = 'missing'
#: the optional string fields of a run that a top-level field of the same name provides.
RUN_OPTIONS = ('train_args', 'test_args', 'scale')


def load_matrix(path: str) -> dict:
    """Read and validate a matrix file; errors name the file and the entry at fault."""
    with open(path) as f:
        try:
            matrix = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: not valid JSON ({err})') from err
    tasks = {t for t, *_ in COLUMNS}
    for i, run in enumerate(matrix.get('runs', [])):
        missing = {'method', 'task', 'config', 'work_dir', 'metrics'} - set(run)
        if missing:
            raise ValueError(f'{path}: runs[{i}] lacks {sorted(missing)}')
        if run['task'] not in tasks:
            raise ValueError(f'{path}: runs[{i}].task {run["task"]!r} not in {sorted(tasks)}')
    for name in RUN_OPTIONS:
        for where, entry in [(name, matrix)] + [(f'runs[{i}].{name}', run)
                                                for i, run in enumerate(matrix.get('runs', []))]:
            if not isinstance(entry.get(name, ''), str):
                raise ValueError(f'{path}: {where} must be a string, got {entry[name]!r}')
    for run in matrix.get('runs', []):
        run['train_args'] = ' '.join(filter(None, [matrix.get('train_args'),
                                                   run.get('train_args')]))
        run['test_args'] = ' '.join(filter(None, [matrix.get('test_args'), run.get('test_args')]))
        run.setdefault('scale', matrix.get('scale', ''))
    for i, abl in enumerate(matrix.get('ablations', [])):
        if {'name', 'task', 'metrics'} - set(abl) or abl['task'] not in tasks:
            raise ValueError(f'{path}: ablations[{i}] needs name, task in {sorted(tasks)} '
                             'and metrics')
    return matrix


def read_metrics(path: str) -> Optional[Dict[str, float]]:
    """The metrics JSON written by ``tools/test.py --out-metrics``, or None if absent."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _cell(metrics: Optional[dict], key: str, scale: float) -> str:
    if metrics is None:
        return MISSING
    if key not in metrics:
        return MISSING
    return f'{float(metrics[key]) * scale:.2f}'


def collect(runs: Sequence[dict]) -> List[Dict[str, str]]:
    """One row per method: {'method': ..., column title: value, 'missing' or '–'}.

    The method is labelled with the scale of its runs, e.g. ``mixedae (tiny ViT, 64 px)``.
    """
    methods: List[str] = []
    for run in runs:
        if run['method'] not in methods:
            methods.append(run['method'])
    rows = []
    for method in methods:
        own = [r for r in runs if r['method'] == method]
        scales = list(dict.fromkeys(r['scale'] for r in own if r.get('scale')))
        row = {'method': f'{method} ({"; ".join(scales)})' if scales else method}
        for task, key, title, scale in COLUMNS:
            found = [r for r in own if r['task'] == task]
            row[title] = (_cell(read_metrics(found[0]['metrics']), key, scale) if found
                          else NOT_IN_MATRIX)
        rows.append(row)
    return rows


def collect_ablations(ablations: Sequence[dict]) -> List[Dict[str, str]]:
    rows = []
    for abl in ablations:
        metrics = read_metrics(abl['metrics'])
        row = {'ablation': abl['name']}
        for task, key, title, scale in COLUMNS:
            if task == abl['task']:
                row[title] = _cell(metrics, key, scale)
        rows.append(row)
    return rows


def results_markdown(rows: Sequence[Dict[str, str]], with_anchors: bool = True) -> str:
    """Our rows, then, under a heading row, the published full-scale reference rows."""
    header = ['method'] + [title for _, _, title, _ in COLUMNS]
    if not with_anchors:
        return markdown_table(rows, header)
    heading = {'method': ANCHOR_HEADING, **{t: '' for t in header[1:]}}
    return (markdown_table([*rows, heading, *published_rows()], header)
            + '\n\n' + published_sources())


def write_csv(rows: Sequence[Dict[str, str]], path: str) -> None:
    header = list(rows[0]) if rows else ['method']
    with atomic_write(path, newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def run_commands(run: dict, gpus: int) -> List[str]:
    """The dist_train / dist_test command lines of one run."""
    opts = ''
    if run.get('checkpoint'):
        opts = (f' --cfg-options model.backbone.init_cfg.type=Pretrained '
                f'model.backbone.init_cfg.checkpoint={run["checkpoint"]}')
    train_args = f' {run["train_args"]}' if run.get('train_args') else ''
    test_args = f' {run["test_args"]}' if run.get('test_args') else ''
    return [  # --cfg-options takes every argument after it: it comes last
        f'tools/dist_train.sh {run["config"]} {gpus} --work-dir {run["work_dir"]}'
        f'{train_args}{opts}',
        f'tools/dist_test.sh {run["config"]} "$(cat {run["work_dir"]}/last_checkpoint)" {gpus} '
        f'--work-dir {run["work_dir"]} --out-metrics {run["metrics"]}{test_args}{opts}',
    ]
