"""Reading MMEngine's training logs and summarising repeated runs: curves, steady-state time
per iteration, mean +/- std over seeds and comparisons between methods."""
from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple


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
