"""The demo's report: ``report.md`` with the transfer table (linear probe first, then
fine-tuning; each method beside MAE and random init with an interval over pretraining seeds),
the hr_acc tables (untrained, pretrained, the no-learning selectors, chance; per layer), bold
decided by Holm's rule over all the report's comparisons, the pretraining table, the curves
and the figures."""
from __future__ import annotations

import os
import os.path as osp
import re
import shutil
from typing import Dict, Mapping, Set, Tuple

from mixedae.utils.io import atomic_write
from ..plots import plot_curves, plot_seeds
from ..results import read_metrics
from ..stats import Comparison, compare, family_real, format_comparison, format_spread
from ..tables import markdown_table, published_rows
from .hr_tables import (SELECTORS, amp_line, hr_acc_comparisons, hr_acc_table, layer_table,
                        pretrain_table)
from .presets import NAMES, TRANSFERS
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
    'before and after pretraining, or MAE against random init (random init is the encoder MAE\'s '
    'run of that seed starts from); Welch\'s (unequal variances) between other methods, whose '
    'runs share a seed but not a start, treated as unpaired (chosen here). Bold marks a '
    'difference called real under one family-wise rule for the whole report: Holm\'s '
    'step-down correction at 5 % over its {m} comparisons with an interval. With {n} seeds per '
    'group the intervals are wide and a real difference can go unseen. No interval where a '
    'group has one run or a difference has no spread at all.')

#: the references every transfer column is compared with
REFERENCES = ('MAE', 'random init')

SeedValues = Dict[str, Dict[str, Dict[int, float]]]


def seed_values(demo: Demo) -> SeedValues:
    """column title -> method name -> {pretraining seed: value} over the runs whose metrics
    exist (every transfer run of an encoder uses its pretraining seed)."""
    p = demo.p
    values: SeedValues = {}
    for task, key, title, scale in TRANSFER_COLUMNS:
        if task != 'probe' and task not in p.finetune_tasks:
            continue
        values[title] = {}
        for method in TRANSFERS:
            found = {s: read_metrics(demo.metrics(task, method, s)) for s in p.pretrain_seeds}
            values[title][NAMES[method]] = {s: float(m[key]) * scale for s, m in found.items()
                                            if m is not None and key in m}
    return values


def _paired(method: str, reference: str) -> bool:
    """MAE and random init are one run of each seed, at its end and at its start."""
    return {method, reference} == {NAMES['mae'], NAMES['scratch']}


def transfer_comparisons(values: SeedValues) -> Dict[Tuple[str, str, str], Comparison]:
    """Each column of each method against MAE and against random init, keyed (column, method,
    reference), each pair of methods once (no "random init − MAE" beside "MAE − random init"):
    paired by seed for MAE against random init, Welch otherwise."""
    comparisons = {}
    for title, column in values.items():
        for method in (NAMES[m] for m in TRANSFERS):
            for ref in REFERENCES:
                a, b = column[method], column[ref]
                if method == ref or not a or not b or (title, ref, method) in comparisons:
                    continue                  # each pair once: random init − MAE is MAE's row
                if _paired(method, ref):
                    seeds = [s for s in a if s in b]
                    if not seeds:
                        continue
                    comparisons[(title, method, ref)] = compare(
                        [a[s] for s in seeds], [b[s] for s in seeds], paired=True)
                else:
                    comparisons[(title, method, ref)] = compare(list(a.values()),
                                                                list(b.values()))
    return comparisons


def transfer_table(values: SeedValues, comparisons: Mapping[Tuple[str, str, str], Comparison],
                   real: Set[Tuple[str, str, str]]) -> str:
    """Per method and column: mean ± std (values), then the difference to MAE and to random
    init with its 95 % interval, bold where ``real``."""
    header = ['method'] + [c for title in values
                           for c in [title, *(f'{title} − {ref}' for ref in REFERENCES)]]
    rows = []
    for method in (NAMES[m] for m in TRANSFERS):
        row = {'method': method}
        for title, column in values.items():
            found = list(column[method].values())
            row[title] = format_spread(found) if found else 'missing'
            for ref in REFERENCES:
                key = (title, method, ref)
                if key in comparisons:
                    row[f'{title} − {ref}'] = format_comparison(comparisons[key], key in real)
        rows.append(row)
    return markdown_table(rows, header)


def write_report(demo: Demo, values: SeedValues, timings: Mapping[str, float]) -> None:
    """``report.md``, ``report.png`` (per-seed results) and ``curves.png`` of a demo;
    ``timings``: seconds per stage name."""
    p, out = demo.p, demo.out
    pre_table, records = pretrain_table(demo, timings)
    comparisons = {**transfer_comparisons(values), **hr_acc_comparisons(demo)}
    real = family_real(comparisons)
    hr_table, chance = hr_acc_table(demo, records, comparisons, real)
    layers = layer_table(demo)
    homologous = {label: r for label, r in records.items() if any('hr_acc' in x for x in r)}
    plot_curves(homologous, ['hr_acc', 'loss_hc'], osp.join(out, 'curves.png'),
                'homologous recognition during pretraining', reference={'hr_acc': chance})
    plot_seeds({title: {m: list(v.values()) for m, v in column.items()}
                for title, column in values.items()}, osp.join(out, 'report.png'),
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
        f'pretraining seed ({", ".join(map(str, p.pretrain_seeds))}), and one fine-tuning run '
        'of each encoder with the same seed. Random init is no new draw: it is the encoder '
        'MAE\'s pretraining run of that seed starts from (MAE\'s initialisation: xavier-uniform '
        'Linears, fixed sin-cos positions; `tools/init_backbone.py`), so its probe is the step-0 '
        'probe of the pretrained methods. Mean ± standard deviation (values); a single run '
        'shows its value alone.', '',
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
        SELECTORS, '',
        '### hr_acc per top-K layer', '',
        'The top-K layers in order of depth, mean ± std over pretraining seeds:', '',
        layers, '',
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
        f'Sum of the stages\' own times: {fmt(sum(timings.values()))} with {p.threads} '
        f'thread(s) per process ({os.cpu_count()} cores visible)'
        + (f'; up to {p.parallel} training runs side by side, so the wall time is shorter (the '
           'demo prints it at the end).' if p.parallel > 1 else '.'), '']
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
