"""Benchmark bookkeeping: the run matrix, metric collection, tables and the bar chart.

A matrix (JSON) lists the runs of the comparison and, optionally, an ablation sweep:

    {"gpus": 8,
     "runs": [{"method": "mixedae", "task": "ade20k", "config": "configs/ade20k/....py",
               "checkpoint": "pretrain/mixedae_vit-b16_backbone.pth",
               "work_dir": "work_dirs/ade20k_mixedae", "metrics": "work_dirs/metrics/ade_mixedae.json"}],
     "ablations": [{"name": "lam0.05", "task": "ade20k", "metrics": "work_dirs/metrics/abl_lam0.05.json"}]}

``task`` is ``ade20k`` (mIoU) or ``coco`` (box AP and mask AP). A run whose metrics file does
not exist is reported as missing, never as zero.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, List, Optional, Sequence

#: displayed columns: (task, metrics-file key, column title, scale to percent)
COLUMNS = [
    ('ade20k', 'mIoU', 'ADE20K mIoU', 1.0),
    ('coco', 'coco/bbox_mAP', 'COCO box AP', 100.0),
    ('coco', 'coco/segm_mAP', 'COCO mask AP', 100.0),
]
MISSING = 'missing'

#: published ViT-B numbers (docs/method.md), shown as reference rows; each names the protocol
#: its numbers come from (docs/protocols.md). Our COCO protocol A (Mask R-CNN + FPN, 1x/3x
#: multi-scale) matches none of the published COCO rows; protocol B is mmdet's ViTDet.
ANCHORS = [
    dict(method='MAE 1600ep (MAE paper; COCO: Mask R-CNN, LSJ 100 ep of Li et al. 2021, '
                'neither protocol A nor B)',
         values={'ADE20K mIoU': '48.1', 'COCO box AP': '50.3', 'COCO mask AP': '44.9'}),
    dict(method='MAE (mmseg reproduction = our ADE20K protocol)',
         values={'ADE20K mIoU': '48.13'}),
    dict(method='MAE ViTDet 100ep (mmdet projects/ViTDet = our COCO protocol B)',
         values={'COCO box AP': '51.6', 'COCO mask AP': '45.7'}),
    dict(method='iBOT (iBOT repo; COCO: Cascade Mask R-CNN 1x, not protocol A)',
         values={'ADE20K mIoU': '50.0', 'COCO box AP': '51.2', 'COCO mask AP': '44.2'}),
    dict(method="MixedAE (paper claim, vs the paper's own MAE run)",
         values={'ADE20K mIoU': 'MAE + 1.7', 'COCO box AP': 'MAE + 0.9'}),
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
    """One row per method: {'method': ..., column title: value or 'missing'}."""
    methods: List[str] = []
    for run in runs:
        if run['method'] not in methods:
            methods.append(run['method'])
    rows = []
    for method in methods:
        row = {'method': method}
        for task, key, title, scale in COLUMNS:
            found = [r for r in runs if r['method'] == method and r['task'] == task]
            row[title] = _cell(read_metrics(found[0]['metrics']), key, scale) if found else '–'
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
    lines += ['| ' + ' | '.join(str(r.get(h, '–')) for h in header) + ' |' for r in rows]
    return '\n'.join(lines)


def results_markdown(rows: Sequence[Dict[str, str]], with_anchors: bool = True) -> str:
    """Our rows, then the published reference rows."""
    header = ['method'] + [title for _, _, title, _ in COLUMNS]
    anchor_rows = [dict(method=f'*{a["method"]}*', **a['values']) for a in ANCHORS]
    return markdown_table(list(rows) + (anchor_rows if with_anchors else []), header)


def write_csv(rows: Sequence[Dict[str, str]], path: str) -> None:
    header = list(rows[0]) if rows else ['method']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def bar_chart(rows: Sequence[Dict[str, str]], path: str, title: str = '') -> None:
    """Grouped bars: one group per metric, one bar per method; missing runs are labelled."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    titles = [t for _, _, t, _ in COLUMNS]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs, heights, labels = [], [], []
        for j, t in enumerate(titles):
            value = row.get(t, MISSING)
            x = j + (i - (len(rows) - 1) / 2) * width
            if value in (MISSING, '–'):
                ax.text(x, 0.5, 'missing', rotation=90, ha='center', va='bottom', fontsize=7)
                continue
            xs.append(x)
            heights.append(float(value))
            labels.append(value)
        bars = ax.bar(xs, heights, width, label=row['method'])
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(range(len(titles)), titles)
    ax.set_ylabel('score (%)')
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_commands(run: dict, gpus: int) -> List[str]:
    """The dist_train / dist_test command lines of one run."""
    opts = ''
    if run.get('checkpoint'):
        opts = (f' --cfg-options model.backbone.init_cfg.type=Pretrained '
                f'model.backbone.init_cfg.checkpoint={run["checkpoint"]}')
    return [
        f'tools/dist_train.sh {run["config"]} {gpus} --work-dir {run["work_dir"]}{opts}',
        f'tools/dist_test.sh {run["config"]} "$(cat {run["work_dir"]}/last_checkpoint)" {gpus} '
        f'--work-dir {run["work_dir"]} --out-metrics {run["metrics"]}{opts}',
    ]
