"""The suite's figures of results: grouped bars (one geometry for every bar chart: one panel
per metric family, each with its own y axis, values written clear of bars, error bars and
dots) and training curves."""
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


def metric_families(titles: Sequence[str]) -> List[List[str]]:
    """The metric titles grouped by their task in :data:`COLUMNS` (ADE20K mIoU; COCO box and mask
    AP), in order of first appearance; a title not in COLUMNS is a family of its own. Each
    family is drawn in its own panel with its own y axis."""
    task = {title: t for t, _, title, _ in COLUMNS}
    families: Dict[str, List[str]] = {}
    for title in titles:
        families.setdefault(task.get(title, title), []).append(title)
    return list(families.values())


def family_axes(families: Sequence[Sequence[str]]):
    """A figure (8 x 4 in, 100 dpi) with one panel per family, each as wide as its metrics
    and with its own y axis, and room below for a legend: (figure, list of axes)."""
    sizes = [len(f) for f in families] or [1]
    fig, axes = _pyplot().subplots(1, len(sizes), figsize=(8, 4), dpi=100, squeeze=False,
                                   width_ratios=sizes, layout='constrained')
    return fig, list(axes[0])


def y_top(highest: float) -> float:
    """Upper y limit of a panel whose highest mark is ``highest``: 25 % headroom for the value
    labels; 100 for a panel without any value."""
    return max(highest * 1.25, 1.0) if highest > 0 else 100.0


def value_label(ax, x: float, top: float, text: str):
    """``text`` centred on ``x`` with its bottom 2 points above ``top`` (the highest mark of the
    bar: its error bar or a seed's dot), so that it never touches them."""
    return ax.annotate(text, (x, top), xytext=(0, 2), textcoords='offset points', ha='center',
                       va='bottom', fontsize=7)


def legend_below(fig, methods: Sequence[str]) -> None:
    """One legend entry per method (colour ``C{i}``), below the panels."""
    from matplotlib.patches import Patch
    if methods:
        fig.legend(handles=[Patch(color=f'C{i}', label=m) for i, m in enumerate(methods)],
                   loc='outside lower center', ncols=min(len(methods), 3), fontsize=8)


def bar_layout(rows: Sequence[Dict[str, str]]) -> List[Tuple[int, str, float, Optional[float]]]:
    """(row index, metric title, x in its family's panel, height) of every bar: height None for
    a missing run; runs absent from the matrix ('–') have no entry. The k-th metric of a
    family is centred on x = k. A cell over seeds (``mean ± std (values)``) is drawn at its
    mean."""
    titles = [title for _, _, title, _ in COLUMNS]
    position = {t: k for family in metric_families(titles) for k, t in enumerate(family)}
    layout = []
    for i, row in enumerate(rows):
        for title in titles:
            value = row.get(title, NOT_IN_MATRIX)
            if value == NOT_IN_MATRIX:
                continue
            height = None if value == MISSING else float(value.split()[0])
            layout.append((i, title, bar_x(position[title], i, len(rows)), height))
    return layout


def bar_figure(rows: Sequence[Dict[str, str]], title: str = ''):
    """Grouped bars, one panel per metric family (:func:`metric_families`), one group per
    metric and one colour per method, each value written above its bar; a missing run is a
    'missing' label inside the axes, and a figure without any result says so."""
    width = bar_width(len(rows))
    layout = bar_layout(rows)
    families = metric_families([t for _, _, t, _ in COLUMNS])
    fig, axes = family_axes(families)
    for ax, family in zip(axes, families):
        own = [(i, x, h) for i, t, x, h in layout if t in family]
        ax.set_ylim(0, y_top(max([h for *_, h in own if h is not None], default=0.0)))
        ax.set_xlim(-0.5, len(family) - 0.5)
        for i, x, height in own:
            if height is None:  # x in data units, y in axes fraction: always inside the axes
                ax.text(x, 0.02, MISSING, rotation=90, ha='center', va='bottom', fontsize=7,
                        color=f'C{i}', transform=ax.get_xaxis_transform())
            else:
                ax.bar([x], [height], width, color=f'C{i}')
                value_label(ax, x, height, f'{height:.2f}')
        ax.set_xticks(range(len(family)), family)
        ax.set_ylabel('score (%)')
    if all(h is None for *_, h in layout):
        fig.text(0.5, 0.6, 'no results yet: every run is missing' if layout else 'no runs',
                 ha='center', va='center', fontsize=12)
    fig.suptitle(title)
    legend_below(fig, [r['method'] for r in rows])
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


def seeds_figure(values: Mapping[str, Mapping[str, Sequence[float]]], title: str = ''):
    """Grouped bars of the mean per (metric, method) with a std error bar, a dot per seed and
    the mean written above the higher of the error bar and the dots; one panel per metric
    family (:func:`metric_families`), each with its own y axis.

    values: metric -> method -> per-seed values; a method without values is left out of that
    metric's group (and listed as missing in the x label).
    """
    methods = list(dict.fromkeys(m for per in values.values() for m in per))
    width = bar_width(len(methods))
    families = metric_families(list(values))
    fig, axes = family_axes(families)
    for ax, family in zip(axes, families):
        labels, highest = [], 0.0
        for k, metric in enumerate(family):
            missing = [m for m in methods if not values[metric].get(m)]
            labels.append(metric + (f'\n(missing: {", ".join(missing)})' if missing else ''))
            for i, method in enumerate(methods):
                seeds = values[metric].get(method)
                if not seeds:
                    continue
                x = bar_x(k, i, len(methods))
                mean, std = mean_std(seeds)
                ax.bar(x, mean, width, yerr=std, capsize=3, color=f'C{i}')
                ax.scatter([x] * len(seeds), seeds, color='black', s=8, zorder=3)
                top = max(mean + std, *seeds)
                value_label(ax, x, top, f'{mean:.1f}')
                highest = max(highest, top)
        ax.set_ylim(0, y_top(highest))
        ax.set_xlim(-0.5, len(family) - 0.5)
        ax.set_xticks(range(len(family)), labels)
        ax.set_ylabel('score (%)')
    fig.suptitle(title, fontsize=10)
    legend_below(fig, methods)
    return fig


def plot_seeds(values: Mapping[str, Mapping[str, Sequence[float]]], path: str,
               title: str = '') -> None:
    """Write :func:`seeds_figure` to ``path``."""
    plt = _pyplot()
    fig = seeds_figure(values, title)
    fig.savefig(path)
    plt.close(fig)
