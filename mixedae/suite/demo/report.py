"""The demo's report: ``report.md`` with the transfer table (linear probe first, each method
beside MAE and random init with an interval over pretraining seeds), the hr_acc table
(untrained, pretrained, chance), bold decided by Holm's rule over all the report's comparisons, the pretraining table, the curves and the figures."""
from __future__ import annotations

import os
import os.path as osp
import re
import shutil
from typing import Dict, List, Mapping, Set, Tuple

from mixedae.utils.io import atomic_write
from ..plots import plot_curves, plot_seeds
from ..results import read_metrics
from ..stats import Comparison, compare, family_real, format_comparison, format_spread
from ..tables import markdown_table, published_rows
from .hr_tables import amp_line, hr_acc_comparisons, hr_acc_table, pretrain_table
from .presets import NAMES, TRANSFERS, Preset
from .runner import fmt
from .stages import Demo

#: transfer columns: (task, metrics-file key, title, scale to percent)
TRANSFER_COLUMNS = [
    ('probe', 'mIoU', 'linear probe mIoU', 1.0),
    ('ade20k', 'mIoU', 'UperNet mIoU', 1.0),
    ('coco', 'coco/bbox_mAP', 'COCO box AP', 100.0),
    ('coco', 'coco/segm_mAP', 'COCO mask AP', 100.0),
]

SCOPE = ('What this demo can show: that every stage of the pipeline runs, and how the methods '
         'compare at this tiny scale on generated scenes, with intervals over pretraining seeds. '
         'What it cannot show: anything about ViT-B on ImageNet, ADE20K or COCO; a difference '
         'here, real or not, does not predict one at full scale.')


FAMILY_RULE = (
    'Differences: mean of the row minus mean of the reference, with a 95 % t interval: paired '
    '(over the per-seed differences) where both numbers come from the same run, as an encoder '
    'before and after pretraining; Welch\'s (unequal variances) between methods, treated as '
    'unpaired (chosen here). Bold marks a difference called real under one family-wise rule for the '
    'whole report: Holm\'s step-down correction at 5 % over its {m} comparisons with an '
    'interval. With {n} seeds per group the intervals are wide and a real difference can go '
    'unseen. No interval where a group has one run or a difference has no spread at all.')


def _seeds(p: Preset, task: str):
    return p.pretrain_seeds if task == 'probe' else p.finetune_seeds


def seed_values(demo: Demo) -> Dict[str, Dict[str, List[float]]]:
    """column title -> method name -> values over the seeds whose metrics exist."""
    p = demo.p
    values: Dict[str, Dict[str, List[float]]] = {}
    for task, key, title, scale in TRANSFER_COLUMNS:
        if task != 'probe' and task not in p.finetune_tasks:
            continue
        values[title] = {}
        for method in TRANSFERS:
            found = [read_metrics(demo.metrics(task, method, s)) for s in _seeds(p, task)]
            values[title][NAMES[method]] = [float(m[key]) * scale for m in found
                                            if m is not None and key in m]
    return values


def transfer_comparisons(values: Mapping[str, Mapping[str, List[float]]]
                         ) -> Dict[Tuple[str, str, str], Comparison]:
    """The linear probe of each method against MAE and against random init, keyed (column,
    method, reference): Welch intervals (the methods' runs are treated as unpaired)."""
    probe = values['linear probe mIoU']
    return {('linear probe mIoU', method, ref): compare(probe[method], probe[ref])
            for method in (NAMES[m] for m in TRANSFERS) for ref in ('MAE', 'random init')
            if method != ref and probe[method] and probe[ref]}


def transfer_table(values: Mapping[str, Mapping[str, List[float]]],
                   comparisons: Mapping[Tuple[str, str, str], Comparison],
                   real: Set[Tuple[str, str, str]]) -> str:
    """Per method: each column's mean ± std (values), and for the linear probe the difference
    to MAE and to random init with its 95 % interval, bold where ``real``."""
    header = ['method', 'linear probe mIoU', '− MAE [95 % interval]',
              '− random init [95 % interval]'] + [t for t in values if t != 'linear probe mIoU']
    rows = []
    for method in (NAMES[m] for m in TRANSFERS):
        row = {t: format_spread(v[method]) if v[method] else 'missing' for t, v in values.items()}
        for ref, col in (('MAE', header[2]), ('random init', header[3])):
            key = ('linear probe mIoU', method, ref)
            if key in comparisons:
                row[col] = format_comparison(comparisons[key], key in real)
        rows.append(dict(row, method=method))
    return markdown_table(rows, header)


def write_report(demo: Demo, values: Dict[str, Dict[str, List[float]]],
                 timings: Mapping[str, float]) -> None:
    """``report.md``, ``report.png`` (per-seed results) and ``curves.png`` of a demo;
    ``timings``: seconds per stage name."""
    p, out = demo.p, demo.out
    pre_table, records = pretrain_table(demo, timings)
    comparisons = {**transfer_comparisons(values), **hr_acc_comparisons(demo)}
    real = family_real(comparisons)
    hr_table, chance = hr_acc_table(demo, records, comparisons, real)
    homologous = {label: r for label, r in records.items() if any('hr_acc' in x for x in r)}
    plot_curves(homologous, ['hr_acc', 'loss_hc'], osp.join(out, 'curves.png'),
                'homologous recognition during pretraining', reference={'hr_acc': chance})
    plot_seeds(values, osp.join(out, 'report.png'),
               f'mixedae demo, preset {p.name}: mean ± std over seeds')
    lines = [
        '# mixedae demo report', '',
        'A small-scale benchmark on the built-in generated data, **not** the paper\'s protocol: '
        f'{p.describe()}. Preset `{p.name}`: {p.threads} thread(s) per process, '
        f'{amp_line(demo)}, '
        f'{"deterministic algorithms" if p.deterministic else "non-deterministic GPU kernels"}.',
        '', SCOPE, '',
        '## Transfer', '',
        'Linear probe (the headline number): batch norm and a 1x1 classifier trained on the '
        'frozen last-block features of each encoder (docs/protocols.md); one probe per '
        f'pretraining seed ({", ".join(map(str, p.pretrain_seeds))}; random init: one '
        'initialisation per seed). Fine-tuning columns: the encoders of pretraining seed(s) '
        f'{", ".join(map(str, p.finetune_seeds))}. Mean ± standard deviation (values); a '
        'single run shows its value alone.', '',
        FAMILY_RULE.format(m=sum(c.p is not None for c in comparisons.values()),
                           n=len(p.pretrain_seeds)), '',
        transfer_table(values, comparisons, real), '',
        '![demo results](report.png)', '',
        'Published ViT-B numbers at full scale, for context only (not comparable with the '
        'rows above):', '',
        markdown_table(published_rows(), ['method', 'ADE20K mIoU', 'COCO box AP',
                                          'COCO mask AP']), '',
        '## Homologous recognition', '',
        '`hr_acc`: among the keys that a patch query keeps in a top-K homologous layer, '
        'leaving out its own key and the class tokens, the fraction from the query\'s own '
        f'image; mean over top-K layers and heads. Chance (keys drawn at random): {chance:.3f}. '
        f'Measured on {p.hr_images} validation scenes with one fixed mixing '
        '(`tools/measure_hr_acc.py`), for the untrained encoder of each run (its '
        'initialisation: step 0) and for the pretrained one; MAE\'s and naive mixing\'s '
        'encoders are measured in MixedAE\'s mixing with zero segment embeddings.', '',
        hr_table, '',
        '![hr_acc and loss_hc over pretraining](curves.png)', '',
        '## Pretraining', '',
        pre_table, '',
        'ms / iter: median of MMEngine\'s per-iteration times after the first log record. '
        'Wall time: the whole process, start-up included, on a possibly shared machine.', '',
        '## Figures', '',
        'Last-layer class-token attention of the encoders (pretraining seed '
        f'{p.pretrain_seeds[0]}) on validation scenes (`tools/visualize_attention.py`):', '',
        '![attention](attention.png)', '',
        'One MixedAE step on a group of validation scenes: the mixed input, each image\'s '
        'own patches, and its reconstruction (`tools/visualize_mixing.py`):', '',
        '![mixing](mixing.png)', '',
        f'Total time of the stages: {fmt(sum(timings.values()))} with {p.threads} thread(s) '
        f'per process ({os.cpu_count()} cores visible).', '']
    with atomic_write(osp.join(out, 'report.md')) as f:
        f.write('\n'.join(lines))


def publish_report(out: str, docs: str) -> str:
    """Copy the report of demo folder ``out`` to ``<docs>/demo_report.md``, its figures to
    ``<docs>/demo_<name>.png`` (links rewritten); the path written."""
    with open(osp.join(out, 'report.md')) as f:
        report = f.read()
    os.makedirs(docs, exist_ok=True)
    for image in sorted(set(re.findall(r'\]\(([\w.-]+\.png)\)', report))):
        shutil.copy(osp.join(out, image), osp.join(docs, f'demo_{image}'))
        report = report.replace(f']({image})', f'](demo_{image})')
    path = osp.join(docs, 'demo_report.md')
    with atomic_write(path) as f:
        f.write(report)
    return path
