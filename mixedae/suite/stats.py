"""Reading MMEngine's training logs and summarising repeated runs: curves, steady-state time
per iteration, mean +/- std over seeds, and comparisons with their intervals under one
family-wise rule (Holm)."""
from __future__ import annotations

import glob
import json
import os
import statistics
from dataclasses import dataclass
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar

from scipy import stats as scipy_stats

K = TypeVar('K', bound=Hashable)


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


def format_spread(values: Sequence[float], digits: int = 2, show_values: bool = True) -> str:
    """``mean ± std (v1, v2, ...)`` with ``digits`` decimals (without the values where
    ``show_values`` is False); a single value alone."""
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    mean, std = mean_std(values)
    text = f'{mean:.{digits}f} ± {std:.{digits}f}'
    return f'{text} ({", ".join(f"{v:.{digits}f}" for v in values)})' if show_values else text


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) with its t interval and two-sided p-value; ``low``, ``high`` and ``p``
    are None where no interval exists, and ``why`` says why."""
    diff: float
    test: str
    low: Optional[float] = None
    high: Optional[float] = None
    p: Optional[float] = None
    why: str = ''


def compare(a: Sequence[float], b: Sequence[float], paired: bool = False,
            level: float = 0.95) -> Comparison:
    """mean(a) - mean(b) and its ``level`` t interval.

    paired: a[i] and b[i] come from the same run or seed, so the interval is the one-sample t
    interval of the differences a[i] - b[i] (scipy's ``ttest_rel``); else Welch's interval
    (unequal variances, ``ttest_ind(equal_var=False)``), chosen over a bootstrap, which is far
    too narrow with three seeds per group. No interval (``why`` set) with fewer than two values
    (pairs) or when the difference has no spread at all (every paired difference equal, or both
    groups constant): a zero-width interval would claim certainty that two or three runs
    cannot give. One constant group beside a varying one still has a Welch interval."""
    if not a or not b:
        raise ValueError(f'compare needs values in both groups, got {len(a)} and {len(b)}')
    if paired and len(a) != len(b):
        raise ValueError(f'a paired comparison needs as many values in each group, got '
                         f'{len(a)} and {len(b)}')
    diff = statistics.fmean(a) - statistics.fmean(b)
    test = 'paired t' if paired else 'Welch t'
    n = min(len(a), len(b))
    if n < 2:
        return Comparison(diff, test, why=f'n = {n}')
    if paired:
        spread = statistics.variance([x - y for x, y in zip(a, b)])
    else:
        spread = statistics.variance(a) + statistics.variance(b)
    if spread == 0:
        return Comparison(diff, test, why='no spread')
    result = (scipy_stats.ttest_rel(a, b) if paired
              else scipy_stats.ttest_ind(a, b, equal_var=False))
    ci = result.confidence_interval(level)
    return Comparison(diff, test, float(ci.low), float(ci.high), float(result.pvalue))


def holm(pvalues: Sequence[Optional[float]], alpha: float = 0.05) -> List[bool]:
    """Holm-Bonferroni: which of the hypotheses are rejected at family-wise level ``alpha``.
    The i-th smallest of the m p-values (i from 1) is compared with alpha / (m - i + 1), in
    order, stopping at the first that is not below; None (no test) is never rejected and does
    not count in m."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    rejected = [False] * len(pvalues)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - rank):
            break
        rejected[i] = True
    return rejected


def family_real(comparisons: Mapping[K, Comparison], alpha: float = 0.05) -> Set[K]:
    """The keys of the comparisons called real by Holm's rule over the whole family."""
    keys = list(comparisons)
    return {k for k, r in zip(keys, holm([comparisons[k].p for k in keys], alpha)) if r}


def format_comparison(c: Comparison, real: bool, digits: int = 2) -> str:
    """``+1.23 [-0.40, +2.90]`` (difference and interval, ``digits`` decimals), bold when
    ``real`` (decided for the whole family, :func:`family_real`); ``+1.23 (no interval: n = 1)``
    where there is none (never bold)."""
    if c.low is None:
        return f'{c.diff:+.{digits}f} (no interval: {c.why})'
    text = f'{c.diff:+.{digits}f} [{c.low:+.{digits}f}, {c.high:+.{digits}f}]'
    return f'**{text}**' if real else text
