"""Transfer results of a run matrix: the matrix file, metric collection and the command lines.

A matrix (JSON) lists the runs of the comparison and, optionally, an ablation sweep:

    {"gpus": 8, "train_args": "--amp", "scale": "ViT-B/16, full schedule",
     "runs": [{"method": "mixedae", "task": "ade20k", "config": "configs/ade20k/....py",
               "checkpoint": "pretrain/mixedae_vit-b16_backbone.pth",
               "work_dir": "work_dirs/ade20k_mixedae",
               "metrics": "work_dirs/metrics/ade_mixedae.json",
               "train_args": "--auto-scale-lr", "test_args": "", "scale": "...", "seed": 0}],
     "reference": "mae",
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
from typing import Dict, List, Optional, Sequence, Tuple

from mixedae.utils.io import atomic_write
from .stats import compare, family_real, format_comparison, format_spread
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
    seen: Dict[tuple, int] = {}
    for i, run in enumerate(matrix.get('runs', [])):
        seed = run.get('seed')
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f'{path}: runs[{i}].seed must be an integer, got {seed!r}')
        key = (run['method'], run['task'], seed)
        if key in seen:
            raise ValueError(f'{path}: runs[{seen[key]}] and runs[{i}] are both {run["method"]}/'
                             f'{run["task"]} with seed {seed}: give each run its own "seed"')
        seen[key] = i
    methods = {run['method'] for run in matrix.get('runs', [])}
    if 'reference' in matrix and matrix['reference'] not in methods:
        raise ValueError(f'{path}: reference {matrix["reference"]!r} is not a method of its runs '
                         f'({sorted(methods)})')
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
    if metrics is None or key not in metrics:
        return MISSING
    return f'{float(metrics[key]) * scale:.2f}'


def _methods(runs: Sequence[dict]) -> List[str]:
    return list(dict.fromkeys(r['method'] for r in runs))


def seed_values(runs: Sequence[dict]) -> Dict[str, Dict[str, Tuple[List[float], int]]]:
    """method -> column title -> (values of the runs whose metrics exist, number of runs)."""
    out: Dict[str, Dict[str, Tuple[List[float], int]]] = {}
    for method in _methods(runs):
        out[method] = {}
        for task, key, title, scale in COLUMNS:
            found = [read_metrics(r['metrics']) for r in runs
                     if r['method'] == method and r['task'] == task]
            out[method][title] = ([float(m[key]) * scale for m in found
                                   if m is not None and key in m], len(found))
    return out


def _spread_cell(values: List[float], runs: int) -> str:
    if runs == 0:
        return NOT_IN_MATRIX
    if not values:
        return MISSING
    text = format_spread(values)
    return text if len(values) == runs else f'{text} [{runs - len(values)} of {runs} missing]'


def collect(runs: Sequence[dict]) -> List[Dict[str, str]]:
    """One row per method: {'method': ..., column title: value, 'missing' or '–'}; several
    runs of a method and task (seeds) give mean ± std (values), one run its value.

    The method is labelled with the scale of its runs, e.g. ``mixedae (tiny ViT, 64 px)``.
    """
    values = seed_values(runs)
    rows = []
    for method in _methods(runs):
        scales = list(dict.fromkeys(r['scale'] for r in runs
                                    if r['method'] == method and r.get('scale')))
        row = {'method': f'{method} ({"; ".join(scales)})' if scales else method}
        row.update({title: _spread_cell(*values[method][title]) for _, _, title, _ in COLUMNS})
        rows.append(row)
    return rows


#: how the differences table is read (printed under it)
REFERENCE_RULE = ('Mean of the method minus mean of the reference over their seeds, with the '
                  '95 % Welch t interval (the runs are treated as unpaired); **bold**: real under '
                  'Holm\'s rule at 5 % over every interval of this table. No interval where a '
                  'method has one run or no spread.')


def compare_to_reference(runs: Sequence[dict], reference: str) -> List[Dict[str, str]]:
    """One row per other method: per column, its mean minus ``reference``'s with the 95 %
    Welch interval over seeds (the two methods' runs are treated as unpaired), bold where
    Holm's rule over every comparison of the table calls it real."""
    values = seed_values(runs)
    comparisons = {(m, title): compare(values[m][title][0], values[reference][title][0])
                   for m in _methods(runs) if m != reference for _, _, title, _ in COLUMNS
                   if values[m][title][0] and values[reference][title][0]}
    real = family_real(comparisons)
    return [{'method': f'{m} − {reference}',
             **{title: format_comparison(comparisons[(m, title)], (m, title) in real)
                for _, _, title, _ in COLUMNS if (m, title) in comparisons}}
            for m in _methods(runs) if m != reference]


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
    if run.get('seed') is not None:
        opts += f' randomness.seed={run["seed"]}' if opts else \
            f' --cfg-options randomness.seed={run["seed"]}'
    train_args = f' {run["train_args"]}' if run.get('train_args') else ''
    test_args = f' {run["test_args"]}' if run.get('test_args') else ''
    return [  # --cfg-options takes every argument after it: it comes last
        f'tools/dist_train.sh {run["config"]} {gpus} --work-dir {run["work_dir"]}'
        f'{train_args}{opts}',
        f'tools/dist_test.sh {run["config"]} "$(cat {run["work_dir"]}/last_checkpoint)" {gpus} '
        f'--work-dir {run["work_dir"]} --out-metrics {run["metrics"]}{test_args}{opts}',
    ]
