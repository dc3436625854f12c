"""The demo report's pretraining and hr_acc tables, and the autocast state its runs logged."""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, Hashable, List, Mapping, Optional, Set, Tuple

from mixedae.engine.optimizers.amp_optim_wrapper import AUTOCAST_LOG
from ..stats import (Comparison, compare, format_comparison, format_spread, read_scalars,
                     steady_time_per_iter)
from ..tables import markdown_table
from .presets import HOMOLOGOUS, NAMES, PRETRAINS
from .stages import Demo

PRETRAIN_HEADER = ['run', 'seed', 'iterations', 'final loss_rec', 'final hr_acc (logged)',
                   'ms / iter', 'ms / iter vs MAE', 'wall time (s)']
#: the no-learning similarity selectors of ``tools/measure_hr_acc.py`` (``_selectors``)
SELECTOR_NAMES = ('mean colour', 'raw pixels')
SELECTORS = (
    'No network: each patch of a mixed sequence keeps the K patches nearest to it in mean '
    'colour (3 numbers), or in raw pixels, on the same scenes and mixing, scored like a top-K '
    'layer. An encoder that does no better than these has shown nothing beyond colour; the '
    'scenes are generated so that the four images of a measured sequence share their palette '
    'and lighting, which brings the mean-colour selector near chance.')
HR_HEADER = ['encoder', 'untrained (step 0)', 'pretrained', 'pretrained − untrained (paired)',
             'logged at the last record']


def _label(name: str, seed: int) -> str:
    return f'{NAMES[name]}, seed {seed}'


def pretrain_table(demo: Demo, timings: Mapping[str, float]
                   ) -> Tuple[str, Dict[str, List[dict]]]:
    """The pretraining table (markdown) and the logged records of each run, by label."""
    p = demo.p
    runs = [(name, s) for s in p.pretrain_seeds for name in PRETRAINS]
    records = {_label(n, s): read_scalars(demo.pretrain_dir(n, s)) for n, s in runs}
    rows = []
    for name, seed in runs:
        recs = records[_label(name, seed)]
        final = recs[-1] if recs else {}
        t = steady_time_per_iter(recs)
        mae = steady_time_per_iter(records[_label('mae', seed)])
        wall = timings.get(f'pretrain {name} s{seed}')
        rows.append(dict(zip(PRETRAIN_HEADER, [
            NAMES[name], str(seed), str(final.get('step', '–')),
            f'{final["loss_rec"]:.3f}' if 'loss_rec' in final else '–',
            f'{final["hr_acc"]:.3f}' if 'hr_acc' in final else '–',
            f'{t * 1000:.0f}' if t else 'n/a', f'{t / mae:.2f}' if t and mae else 'n/a',
            f'{wall:.0f}' if wall else 'n/a'])))
    return markdown_table(rows, PRETRAIN_HEADER), records


def _read(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _spread(values: List[float]) -> str:
    return format_spread(values, digits=3) if values else 'missing'


def _measured(demo: Demo) -> Dict[str, dict]:
    return {name: _read(demo.hr_acc_file(name)) or {} for name in HOMOLOGOUS}


def _per_seed(measured: Mapping[str, dict], name: str, label: str,
              seeds) -> Dict[int, float]:
    """seed -> hr_acc of encoder ``label`` measured with method ``name``'s config."""
    return {s: measured[name][f'{label}_s{s}']['hr_acc'] for s in seeds
            if f'{label}_s{s}' in measured[name]}


def hr_acc_comparisons(demo: Demo) -> Dict[Tuple[str, str], Comparison]:
    """Pretrained minus untrained hr_acc of each method with top-K layers, keyed ('hr_acc',
    method): paired by seed (both numbers are the same run, at its last and its first step)."""
    measured, seeds = _measured(demo), demo.p.pretrain_seeds
    comparisons = {}
    for name in HOMOLOGOUS:
        init, final = _per_seed(measured, name, 'init', seeds), _per_seed(measured, name, name,
                                                                           seeds)
        both = [s for s in seeds if s in init and s in final]
        if both:
            comparisons[('hr_acc', name)] = compare([final[s] for s in both],
                                                    [init[s] for s in both], paired=True)
    return comparisons


def hr_acc_table(demo: Demo, records: Mapping[str, List[dict]],
                 comparisons: Mapping[Hashable, Comparison], real: Set[Hashable]
                 ) -> Tuple[str, float]:
    """The hr_acc table over pretraining seeds (markdown) and chance. Rows: each method with
    top-K layers, measured untrained and pretrained with its own config, the paired difference
    (bold where in ``real``); MAE's and naive mixing's pretrained encoders measured with
    MixedAE's."""
    seeds = demo.p.pretrain_seeds
    measured = _measured(demo)
    chance = next((m['_chance'] for m in measured.values() if '_chance' in m), float('nan'))

    def values(name: str, label: str) -> List[float]:
        return list(_per_seed(measured, name, label, seeds).values())

    rows = []
    for name in HOMOLOGOUS:
        key = ('hr_acc', name)
        logged = [records[_label(name, s)][-1]['hr_acc'] for s in seeds
                  if records[_label(name, s)] and 'hr_acc' in records[_label(name, s)][-1]]
        rows.append(dict(zip(HR_HEADER, [
            NAMES[name], _spread(values(name, 'init')), _spread(values(name, name)),
            format_comparison(comparisons[key], key in real, digits=3)
            if key in comparisons else '–',
            _spread(logged)])))
    for other in ('mae', 'naivemix'):
        rows.append({HR_HEADER[0]: f'{NAMES[other]} (in MixedAE\'s mixing)',
                     HR_HEADER[2]: _spread(values('mixedae', other))})
    selectors = measured['mixedae'].get('_selectors', {})
    for name in SELECTOR_NAMES:
        value = f'{selectors[name]["hr_acc"]:.3f}' if name in selectors else 'missing'
        rows.append({HR_HEADER[0]: f'{name} (no network)', HR_HEADER[1]: value,
                     HR_HEADER[2]: value})
    rows.append({HR_HEADER[0]: 'chance', HR_HEADER[1]: f'{chance:.3f}',
                 HR_HEADER[2]: f'{chance:.3f}'})
    return markdown_table(rows, HR_HEADER), chance


def layer_table(demo: Demo) -> str:
    """hr_acc of each top-K layer (columns, in order of depth), mean ± std over seeds, for
    each method's untrained and pretrained encoders and, in MixedAE's mixing, MAE's and naive
    mixing's."""
    seeds, measured = demo.p.pretrain_seeds, _measured(demo)
    encoders = [(f'{NAMES[n]}, step 0', n, 'init') for n in HOMOLOGOUS]
    encoders += [(NAMES[n], n, n) for n in HOMOLOGOUS]
    encoders += [(f'{NAMES[o]} (in MixedAE\'s mixing)', 'mixedae', o) for o in ('mae', 'naivemix')]
    rows, width = [], 0
    for title, name, label in encoders:
        per_seed = [measured[name][f'{label}_s{s}']['per_layer'] for s in seeds
                    if 'per_layer' in measured[name].get(f'{label}_s{s}', {})]
        layers = list(zip(*per_seed))                     # one tuple of seed values per layer
        width = max(width, len(layers))
        rows.append({'encoder': title,
                     **{f'layer {i + 1}': format_spread(v, 3, show_values=False)
                        for i, v in enumerate(layers)}})
    return markdown_table(rows, ['encoder'] + [f'layer {i + 1}' for i in range(width)])


def amp_line(demo: Demo) -> str:
    """What the pretraining runs trained in, as their logs say (``AUTOCAST_LOG``), not as the
    preset intends; 'fp32 (no autocast)' for a preset without ``--amp``."""
    if not demo.p.amp:
        return 'fp32 (no autocast)'
    found = set()
    for name in PRETRAINS:
        for seed in demo.p.pretrain_seeds:
            path = demo.log(f'pretrain_{name}_s{seed}')
            if osp.isfile(path):
                with open(path) as f:
                    found |= {line.split(AUTOCAST_LOG, 1)[1].strip() for line in f
                              if AUTOCAST_LOG in line}
    if not found:
        return 'autocast requested (--amp) but no run logged its state'
    return 'measured in the runs\' first step: ' + '; '.join(sorted(found))
