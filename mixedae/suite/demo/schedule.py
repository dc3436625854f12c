"""Running a list of stages in order: finished stages reused, each stage timed, an ETA from the
times measured so far (per kind of stage) and the preset's expected times for kinds not run yet."""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from dataclasses import dataclass
import statistics
from typing import Callable, Dict, List, Mapping, Sequence

from mixedae.utils.io import atomic_write
from .runner import fmt


@dataclass
class Stage:
    """One step of the demo: done when all its ``outputs`` exist and ``current()`` holds."""
    name: str
    kind: str                       # key of Preset.expected_s
    outputs: List[str]
    run: Callable[[], None]
    current: Callable[[], bool] = lambda: True

    def done(self) -> bool:
        return all(osp.exists(p) for p in self.outputs) and self.current()


def read_timings(path: str) -> Dict[str, float]:
    """Seconds per stage name recorded by an earlier run ({} if none)."""
    if not osp.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def eta(stages: Sequence[Stage], expected_s: Mapping[str, float],
        measured: Mapping[str, Sequence[float]]) -> float:
    """Seconds left for the stages not yet done (the report always runs): per stage, the mean
    time of its kind measured in this run; for a kind not run yet, its expected time times the
    pace so far (measured over expected, summed over the kinds run)."""
    spent = sum(sum(t) for t in measured.values())
    planned = sum(expected_s.get(kind, 0) * len(t) for kind, t in measured.items())
    pace = spent / planned if planned else 1.0
    return sum(statistics.fmean(measured[s.kind]) if measured.get(s.kind)
               else pace * expected_s.get(s.kind, 0) for s in stages
               if s.kind == 'report' or not s.done())


def run_stages(stages: Sequence[Stage], expected_s: Mapping[str, float],
               timings_file: str) -> Dict[str, float]:
    """Run every stage whose outputs are missing (the report always), printing progress and
    ETA; the seconds of each stage run are saved to ``timings_file`` as they finish."""
    timings = read_timings(timings_file)
    os.makedirs(osp.dirname(timings_file), exist_ok=True)
    start = time.time()
    measured: Dict[str, List[float]] = {}
    for i, stage in enumerate(stages, 1):
        print(f'[{i}/{len(stages)}] {stage.name:<22} elapsed {fmt(time.time() - start)}, '
              f'ETA {fmt(eta(stages[i - 1:], expected_s, measured))}', flush=True)
        if stage.done() and stage.kind != 'report':
            print('         reused (outputs exist)', flush=True)
            continue
        t0 = time.time()
        stage.run()
        took = time.time() - t0
        if stage.kind != 'report':
            timings[stage.name] = took
            with atomic_write(timings_file) as f:
                json.dump(timings, f, indent=1)
        measured.setdefault(stage.kind, []).append(took)
        print(f'         done in {fmt(took)}', flush=True)
    print(f'demo finished in {fmt(time.time() - start)}')
    return timings
