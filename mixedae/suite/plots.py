"""The suite's figures of results: grouped bars (one geometry for every bar chart) and
training curves."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mixedae.utils.io import atomic_write
from .results import MISSING
from .stats import curve, mean_std
from .tables import COLUMNS, NOT_IN_MATRIX


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def bar_width(members: int) -> float:
    """Width of one bar when ``members`` bars share a group of width 0.8."""
    return 0.8 / max(members, 1)


def bar_x(group: int, member: int, members: int) -> float:
    """Centre of bar ``member`` of ``members`` in group ``group`` (groups centred on x = group)."""
    return group + (member - (members - 1) / 2) * bar_width(members)


def bar_layout(rows: Sequence[Dict[str, str]]) -> List[Tuple[int, float, Optional[float]]]:
    """(row index, x, height) of every bar: height None for a missing run; runs absent from the
    matrix ('–') have no entry. Metric j is centred on x = j."""
    layout = []
    for i, row in enumerate(rows):
        for j, (_, _, title, _) in enumerate(COLUMNS):
            value = row.get(title, NOT_IN_MATRIX)
            if value == NOT_IN_MATRIX:
                continue
            height = None if value == MISSING else float(value)
            layout.append((i, bar_x(j, i, len(rows)), height))
    return layout


def bar_figure(rows: Sequence[Dict[str, str]], title: str = ''):
    """Grouped bars, one group per metric and one colour per method; a missing run is a
    'missing' label inside the axes, and a figure without any result says so."""
    from matplotlib.patches import Patch

    fig, ax = _pyplot().subplots(figsize=(8, 4), dpi=100)
    width = bar_width(len(rows))
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
    plt = _pyplot()
    fig = bar_figure(rows, title)
    with atomic_write(path, 'wb') as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or 'png')
    plt.close(fig)


def plot_curves(curves: Mapping[str, Sequence[dict]], keys: Sequence[str], path: str,
                title: str = '', reference: Mapping[str, float] = None) -> None:
    """One panel per key, one line per named run (records from :func:`read_scalars`);
    ``reference`` draws a dashed horizontal line per key (e.g. chance level)."""
    plt = _pyplot()
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
    plt = _pyplot()
    metrics = list(values)
    methods = list(dict.fromkeys(m for per in values.values() for m in per))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = bar_width(len(methods))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    labels = []
    for j, metric in enumerate(metrics):
        missing = [m for m in methods if not values[metric].get(m)]
        labels.append(metric + (f'\n(missing: {", ".join(missing)})' if missing else ''))
        for i, method in enumerate(methods):
            seeds = values[metric].get(method)
            if not seeds:
                continue
            x = bar_x(j, i, len(methods))
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
