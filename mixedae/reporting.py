"""Reading MMEngine's training logs and summarising repeated runs: curves, steady-state time
per iteration, mean +/- std over seeds, and the plots of the demo report."""
from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Dict, List, Mapping, Optional, Sequence, Tuple


def read_scalars(work_dir: str) -> List[dict]:
    """Training records of MMEngine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` files,
    oldest run first, one per logged step (a resumed run's record replaces an earlier one of
    the same step); records without a ``loss`` (validation) are left out."""
    files = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))
    by_step: Dict[int, dict] = {}
    for path in files:
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f'{path}:{line_no}: not a JSON record ({err})') from err
                if 'loss' in record and 'step' in record:
                    by_step[int(record['step'])] = record
    return [by_step[s] for s in sorted(by_step)]


def curve(records: Sequence[dict], key: str) -> Tuple[List[int], List[float]]:
    """(steps, values) of ``key`` over the records that have it."""
    pairs = [(int(r['step']), float(r[key])) for r in records if key in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def steady_time_per_iter(records: Sequence[dict], skip: int = 1) -> Optional[float]:
    """Median of the logged seconds per iteration after the first ``skip`` records (start-up,
    first data loads): the steady-state speed, little moved by a burst of load on the
    machine. None when fewer records were logged."""
    times = [float(r['time']) for r in records if 'time' in r][skip:]
    return statistics.median(times) if times else None


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError('mean_std of no values')
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_spread(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± std (v1, v2, ...)`` with ``digits`` decimals."""
    mean, std = mean_std(values)
    return (f'{mean:.{digits}f} ± {std:.{digits}f} '
            f'({", ".join(f"{v:.{digits}f}" for v in values)})')


def compare(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Difference of means a - b, the spread (the larger of the two standard deviations) and
    whether the difference exceeds it."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    spread = max(sa, sb)
    return dict(diff=ma - mb, spread=spread, exceeds=float(abs(ma - mb) > spread))


def comparison_sentence(metric: str, a_name: str, a: Sequence[float], b_name: str,
                        b: Sequence[float]) -> str:
    """One line: the difference of means, the spread, and which is larger."""
    c = compare(a, b)
    verdict = ('larger than the spread' if c['exceeds'] else
               'within the spread: no difference can be claimed')
    return (f'{metric}: {a_name} - {b_name} = {c["diff"]:+.2f} over {len(a)} / {len(b)} seeds; '
            f'spread (larger std) {c["spread"]:.2f}: {verdict}.')


def plot_curves(curves: Mapping[str, Sequence[dict]], keys: Sequence[str], path: str,
                title: str = '', reference: Mapping[str, float] = None) -> None:
    """One panel per key, one line per named run (records from :func:`read_scalars`);
    ``reference`` draws a dashed horizontal line per key (e.g. chance level)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), dpi=100,
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, records in curves.items():
            steps, values = curve(records, key)
            if steps:
                ax.plot(steps, values, label=name)
        if reference and key in reference:
            ax.axhline(reference[key], color='grey', linestyle='--', linewidth=1,
                       label=f'chance ({reference[key]:g})')
        ax.set_xlabel('iteration')
        ax.set_title(key)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_seeds(values: Mapping[str, Mapping[str, Sequence[float]]], path: str,
               title: str = '') -> None:
    """Grouped bars of the mean per (metric, method) with a std error bar and a dot per seed.

    values: metric -> method -> per-seed values; a method without values is left out of that
    metric's group (and listed as missing in the x label).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = list(values)
    methods = list(dict.fromkeys(m for per in values.values() for m in per))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / max(len(methods), 1)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    labels = []
    for j, metric in enumerate(metrics):
        missing = [m for m in methods if not values[metric].get(m)]
        labels.append(metric + (f'\n(missing: {", ".join(missing)})' if missing else ''))
        for i, method in enumerate(methods):
            seeds = values[metric].get(method)
            if not seeds:
                continue
            x = j + (i - (len(methods) - 1) / 2) * width
            mean, std = mean_std(seeds)
            ax.bar(x, mean, width, yerr=std, capsize=3, color=colours[i % len(colours)],
                   label=method)
            ax.scatter([x] * len(seeds), seeds, color='black', s=8, zorder=3)
            ax.text(x, mean, f'{mean:.1f}', ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(metrics)), labels)
    ax.set_ylabel('score (%)')
    ax.set_title(title)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))                  # one legend entry per method
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
