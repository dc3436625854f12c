"""The demo's report: ``report.md`` with the pretraining table, per-seed transfer results
(mean +/- std), the comparison sentences, the curves, the results plot and the figures."""
from __future__ import annotations

import os
import os.path as osp
import re
import shutil
from typing import Dict, List, Mapping, Tuple

from mixedae.utils.io import atomic_write
from ..plots import plot_curves, plot_seeds
from ..results import read_metrics
from ..stats import comparison_sentence, format_spread, read_scalars, steady_time_per_iter
from ..tables import COLUMNS, markdown_table, published_rows
from .presets import METHODS, NAMES, PRETRAINS, Preset
from .runner import fmt
from .stages import Demo


def seed_values(demo: Demo) -> Dict[str, Dict[str, List[float]]]:
    """metric title -> method name -> per-seed values (seeds whose metrics exist)."""
    values: Dict[str, Dict[str, List[float]]] = {}
    for task, key, title, scale in COLUMNS:
        values[title] = {}
        for method in METHODS:
            found = [read_metrics(demo.metrics(task, method, s)) for s in demo.p.seeds]
            values[title][NAMES[method]] = [float(m[key]) * scale for m in found
                                            if m is not None and key in m]
    return values


def pretrain_runs(p: Preset) -> List[Tuple[str, str, int]]:
    """(label, run name, seed) of every pretraining run of preset ``p``."""
    pre = p.seeds[0]
    return ([(NAMES[name], name, pre) for name in PRETRAINS] +
            [(f'{NAMES["mixedae"]}, seed {s}', 'mixedae', s) for s in p.hr_seeds])


PRETRAIN_HEADER = ['run', 'epochs', 'iterations', 'final hr_acc', 'final loss_hc', 'ms / iter',
                   'ms / iter vs MAE', 'wall time (s)']


def _pretrain_table(demo: Demo, timings: Mapping[str, float]
                    ) -> Tuple[str, Dict[str, List[dict]]]:
    """The pretraining table (markdown) and the logged records of each run, by label."""
    p = demo.p
    runs = pretrain_runs(p)
    records = {label: read_scalars(demo.pretrain_dir(name, seed)) for label, name, seed in runs}
    per_iter = {label: steady_time_per_iter(r) for label, r in records.items()}
    mae = per_iter[NAMES['mae']]
    rows = []
    for label, name, seed in runs:
        recs = records[label]
        final = recs[-1] if recs else {}
        hr = f'{final["hr_acc"]:.3f}' if 'hr_acc' in final else '–'
        hc = f'{final["loss_hc"]:.3f}' if 'loss_hc' in final else '–'
        t = per_iter[label]
        ratio = f'{t / mae:.2f}' if t and mae else 'n/a'
        wall = timings.get(f'pretrain {name} s{seed}')
        rows.append(dict(zip(PRETRAIN_HEADER, [
            label, str(p.pretrain_epochs), str(final.get('step', '–')), hr, hc,
            f'{t * 1000:.0f}' if t else 'n/a', ratio, f'{wall:.0f}' if wall else 'n/a'])))
    return markdown_table(rows, PRETRAIN_HEADER), records


def write_report(demo: Demo, values: Dict[str, Dict[str, List[float]]],
                 timings: Mapping[str, float]) -> None:
    """``report.md``, ``report.png`` (per-seed results) and ``curves.png`` of a demo;
    ``timings``: seconds per stage name."""
    p, out = demo.p, demo.out
    pretrain_table, records = _pretrain_table(demo, timings)
    mixed = [label for label, name, _ in pretrain_runs(p) if name.startswith('mixedae')]
    plot_curves({label: records[label] for label in mixed},
                ['hr_acc', 'loss_hc'], osp.join(out, 'curves.png'),
                'homologous recognition during pretraining', reference={'hr_acc': 0.25})
    hr_seeds = [(seed, records[label][-1]['hr_acc']) for label, name, seed in pretrain_runs(p)
                if name == 'mixedae' and records[label] and 'hr_acc' in records[label][-1]]
    hr_spread = (f'Final hr_acc of MixedAE over pretraining seeds '
                 f'{", ".join(str(s) for s, _ in hr_seeds)}: '
                 f'{format_spread([v for _, v in hr_seeds], digits=3)}; chance 0.25.'
                 if hr_seeds else 'No MixedAE pretraining logged hr_acc.')
    plot_seeds(values, osp.join(out, 'report.png'),
               f'mixedae demo, preset {p.name}: mean ± std over {len(p.seeds)} seeds')
    pre_note = (f'MAE and MixedAE are pretrained once (seed {p.seeds[0]}); the spread is that '
                'of fine-tuning from the same encoder, not of pretraining')
    scale = (f'preset `{p.name}`, {len(p.seeds)} seeds ({", ".join(map(str, p.seeds))}); '
             f'{pre_note}')
    table = [{'method': method, **{t: format_spread(v[method]) if v[method] else 'missing'
                                   for t, v in values.items()}}
             for method in (NAMES[m] for m in METHODS)]
    header = ['method'] + list(values)
    comparisons = [comparison_sentence(t, 'MixedAE', v['MixedAE'], 'MAE', v['MAE'])
                   for t, v in values.items() if v['MixedAE'] and v['MAE']]
    total = sum(timings.values())
    lines = [
        '# mixedae demo report', '',
        'A small-scale benchmark on the built-in generated data, **not** the paper\'s protocol: '
        f'{p.describe()}. Preset `{p.name}`: {p.threads} thread(s) per process, '
        f'{"autocast (tools/train.py --amp), " if p.amp else ""}'
        f'{"deterministic algorithms" if p.deterministic else "non-deterministic GPU kernels"}'
        '. Its numbers say nothing about ViT-B at full scale.', '',
        '## Homologous recognition', '',
        '`hr_acc`: the fraction of the keys kept by the top-K homologous attention that come '
        'from the query\'s own image (mean over layers and heads; chance = 1/G = 0.25). '
        '`loss_hc`: the weighted homologous contrastive loss. Values are MMEngine\'s logged '
        f'means over {p.log_interval} iterations; the table shows the last record.', '',
        '![hr_acc and loss_hc over pretraining](curves.png)', '',
        hr_spread, '',
        '## Pretraining', '',
        pretrain_table, '',
        'ms / iter: median of MMEngine\'s per-iteration times after the first log record '
        '(steady state, robust to load from other processes). Wall time: one measurement of '
        'the whole process, start-up included, on a possibly shared machine (stages reused '
        'from an earlier run keep the time measured then).', '',
        '## Transfer results', '',
        f'Mean ± standard deviation over seeds (individual values in brackets); {scale}.', '',
        markdown_table(table, header), '',
        *[f'- {c} (demo scale, {scale}.)' for c in comparisons], '',
        '![demo results](report.png)', '',
        'Published ViT-B numbers at full scale, for context only (not comparable with the '
        'rows above):', '',
        markdown_table(published_rows(), header), '',
        '## Figures', '',
        'Last-layer class-token attention of the MAE and MixedAE encoders '
        f'(seed {p.seeds[0]}) on validation scenes (`tools/visualize_attention.py`):', '',
        '![attention](attention.png)', '',
        'One MixedAE step on a group of validation scenes: the mixed input, each image\'s '
        'own patches, and its reconstruction (`tools/visualize_mixing.py`):', '',
        '![mixing](mixing.png)', '',
        f'Total time of the stages: {fmt(total)} with {p.threads} thread(s) per process '
        f'({os.cpu_count()} cores visible).', '']
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
