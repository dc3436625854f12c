"""Benchmark bookkeeping: the run matrix, metric collection, tables and the bar chart.

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
from typing import Dict, List, Optional, Sequence, Tuple

from mixedae.utils.io import atomic_write

#: displayed columns: (task, metrics-file key, column title, scale to percent)
COLUMNS = [
    ('ade20k', 'mIoU', 'ADE20K mIoU', 1.0),
    ('coco', 'coco/bbox_mAP', 'COCO box AP', 100.0),
    ('coco', 'coco/segm_mAP', 'COCO mask AP', 100.0),
]
MISSING = 'missing'
NOT_IN_MATRIX = '–'
#: the optional string fields of a run that a top-level field of the same name provides.
RUN_OPTIONS = ('train_args', 'test_args', 'scale')

#: published ViT-B numbers (docs/method.md), shown as reference rows with where each is published;
#: each names the protocol its numbers come from (docs/protocols.md). Our COCO protocol A
#: (Mask R-CNN + FPN, 1x/3x multi-scale) matches none of the published COCO rows; protocol B is
#: mmdet's ViTDet.
ANCHORS = [
    dict(method='MAE 1600ep (MAE paper; COCO: Mask R-CNN, LSJ 100 ep of Li et al. 2021, '
                'neither protocol A nor B)',
         values={'ADE20K mIoU': '48.1', 'COCO box AP': '50.3', 'COCO mask AP': '44.9'},
         source='https://arxiv.org/abs/2111.06377'),
    dict(method='MAE (mmseg reproduction = our ADE20K protocol)',
         values={'ADE20K mIoU': '48.13'},
         source='https://github.com/open-mmlab/mmsegmentation/tree/main/configs/mae'),
    dict(method='MAE ViTDet 100ep (mmdet projects/ViTDet = our COCO protocol B)',
         values={'COCO box AP': '51.6', 'COCO mask AP': '45.7'},
         source='https://github.com/open-mmlab/mmdetection/tree/main/projects/ViTDet'),
    dict(method='iBOT (iBOT repo; COCO: Cascade Mask R-CNN 1x, not protocol A)',
         values={'ADE20K mIoU': '50.0', 'COCO box AP': '51.2', 'COCO mask AP': '44.2'},
         source='https://github.com/bytedance/ibot'),
    dict(method="MixedAE (paper claim, vs the paper's own MAE run)",
         values={'ADE20K mIoU': 'MAE + 1.7', 'COCO box AP': 'MAE + 0.9'},
         source='https://arxiv.org/abs/2303.17152'),
]


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


def markdown_table(rows: Sequence[Dict[str, str]], header: Sequence[str]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(r.get(h, NOT_IN_MATRIX)) for h in header) + ' |'
              for r in rows]
    return '\n'.join(lines)


#: the heading row between our rows and the published ones.
ANCHOR_HEADING = '**published, full scale (ViT-B/16), for reference:**'


def results_markdown(rows: Sequence[Dict[str, str]], with_anchors: bool = True) -> str:
    """Our rows, then, under a heading row, the published full-scale reference rows."""
    header = ['method'] + [title for _, _, title, _ in COLUMNS]
    anchor_rows = [{'method': ANCHOR_HEADING, **{t: '' for t in header[1:]}}]
    anchor_rows += [dict(method=f'*{a["method"]}*', **a['values']) for a in ANCHORS]
    if not with_anchors:
        return markdown_table(rows, header)
    sources = ', '.join(f'[{a["method"]}]({a["source"]})' for a in ANCHORS)
    return (markdown_table(list(rows) + anchor_rows, header)
            + f'\n\nSources of the reference rows: {sources}.')


def write_csv(rows: Sequence[Dict[str, str]], path: str) -> None:
    header = list(rows[0]) if rows else ['method']
    with atomic_write(path, newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def bar_layout(rows: Sequence[Dict[str, str]]) -> List[Tuple[int, float, Optional[float]]]:
    """(row index, x, height) of every bar: height None for a missing run; runs absent from the
    matrix ('–') have no entry. Metric j is centred on x = j."""
    width = 0.8 / max(len(rows), 1)
    layout = []
    for i, row in enumerate(rows):
        for j, (_, _, title, _) in enumerate(COLUMNS):
            value = row.get(title, NOT_IN_MATRIX)
            if value == NOT_IN_MATRIX:
                continue
            x = j + (i - (len(rows) - 1) / 2) * width
            layout.append((i, x, None if value == MISSING else float(value)))
    return layout


def bar_figure(rows: Sequence[Dict[str, str]], title: str = ''):
    """Grouped bars, one group per metric and one colour per method; a missing run is a
    'missing' label inside the axes, and a figure without any result says so."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / max(len(rows), 1)
    layout = bar_layout(rows)
    top = max([h for *_, h in layout if h is not None], default=0.0)
    ax.set_ylim(0, max(top * 1.15, 1.0) if top else 100.0)
    ax.set_xlim(-0.5, len(COLUMNS) - 0.5)
    for i, x, height in layout:
        if height is None:  # x in data units, y in axes fraction: always inside the axes
            ax.text(x, 0.02, MISSING, rotation=90, ha='center', va='bottom', fontsize=7,
                    color=f'C{i}', transform=ax.get_xaxis_transform())
        else:
            bars = ax.bar([x], [height], width, color=f'C{i}')
            ax.bar_label(bars, labels=[f'{height:.2f}'], fontsize=7, padding=1)
    if all(h is None for *_, h in layout):
        ax.text(0.5, 0.6, 'no results yet: every run is missing' if layout else 'no runs',
                ha='center', va='center', fontsize=12, transform=ax.transAxes)
    ax.set_xticks(range(len(COLUMNS)), [t for _, _, t, _ in COLUMNS])
    ax.set_ylabel('score (%)')
    ax.set_title(title)
    if rows:
        ax.legend(handles=[Patch(color=f'C{i}', label=r['method']) for i, r in enumerate(rows)],
                  fontsize=8)
    fig.tight_layout()
    return fig


def bar_chart(rows: Sequence[Dict[str, str]], path: str, title: str = '') -> None:
    """Write :func:`bar_figure` to ``path`` (atomically)."""
    import matplotlib.pyplot as plt
    fig = bar_figure(rows, title)
    with atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png')
    plt.close(fig)


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
