"""Reading MMEngine's training logs and summarising repeated runs: curves, steady-state time
per iteration, mean +/- std over seeds and comparisons between methods."""
from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from scipy import stats as scipy_stats


def _records(work_dir: str) -> List[dict]:
    """Every record of MMEngine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` files, oldest
    run first."""
    records = []
    for path in sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f'{path}:{line_no}: not a JSON record ({err})') from err
    return records


def read_scalars(work_dir: str) -> List[dict]:
    """Training records of MMEngine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` files,
    oldest run first, one per logged step (a resumed run's record replaces an earlier one of
    the same step); records without a ``loss`` (validation) are left out."""
    by_step = {int(r['step']): r for r in _records(work_dir) if 'loss' in r and 'step' in r}
    return [by_step[s] for s in sorted(by_step)]


def read_records(work_dir: str) -> List[dict]:
    """The training records (:func:`read_scalars`) and the validation records (the latest
    of each step) of a work dir, in step order."""
    validation = {int(r['step']): r for r in _records(work_dir) if 'loss' not in r
                  and 'step' in r}
    return sorted(read_scalars(work_dir) + list(validation.values()),
                  key=lambda r: int(r['step']))


def read_validation(work_dir: str, step: int) -> Optional[Dict[str, float]]:
    """The metrics of the validation logged at ``step`` (the latest such record; timing fields
    left out), or None when there is none."""
    found = [r for r in _records(work_dir) if 'loss' not in r and r.get('step') == step]
    if not found:
        return None
    return {k: v for k, v in found[-1].items() if k not in ('step', 'time', 'data_time')}


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


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95
                        ) -> Tuple[float, float]:
    """Welch's t interval for mean(a) - mean(b) (unequal variances; scipy's
    ``ttest_ind(equal_var=False)``). Chosen over a bootstrap: with three seeds per group a
    percentile bootstrap is far too narrow, the t interval is not. Needs >= 2 values per group;
    two constant groups give the point interval of their difference."""
    if min(len(a), len(b)) < 2:
        raise ValueError(f'an interval needs >= 2 values per group, got {len(a)} and {len(b)}')
    if statistics.variance(a) == statistics.variance(b) == 0:
        diff = statistics.fmean(a) - statistics.fmean(b)
        return diff, diff
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    return float(ci.low), float(ci.high)


def compare(a: Sequence[float], b: Sequence[float]) -> Dict[str, Optional[float]]:
    """Difference of means a - b and its 95 % Welch interval (``low``/``high`` None with
    fewer than two values in a group); ``real`` is 1.0 when the interval excludes zero."""
    diff = mean_std(a)[0] - mean_std(b)[0]
    if min(len(a), len(b)) < 2:
        return dict(diff=diff, low=None, high=None, real=0.0)
    low, high = difference_interval(a, b)
    return dict(diff=diff, low=low, high=high, real=float(low > 0 or high < 0))


def format_difference(a: Sequence[float], b: Sequence[float], digits: int = 2) -> str:
    """``+1.23 [-0.40, +2.90]`` (difference of means and its 95 % Welch interval, ``digits``
    decimals), bold when the interval excludes zero; ``+1.23 (n = 1: no interval)`` otherwise."""
    c = compare(a, b)
    if c['low'] is None:
        return f'{c["diff"]:+.{digits}f} (n = {min(len(a), len(b))}: no interval)'
    text = f'{c["diff"]:+.{digits}f} [{c["low"]:+.{digits}f}, {c["high"]:+.{digits}f}]'
    return f'**{text}**' if c['real'] else text
