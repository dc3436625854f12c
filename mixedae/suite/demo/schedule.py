"""Running a list of stages in order: finished stages reused, each stage timed, an ETA from the
preset's expected times scaled by the pace measured so far."""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from dataclasses import dataclass
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


def eta(stages: Sequence[Stage], expected_s: Mapping[str, float], pace: float) -> float:
    """Seconds left for the stages not yet done: their expected times times ``pace``."""
    return pace * sum(expected_s.get(s.kind, 0) for s in stages if not s.done())


def run_stages(stages: Sequence[Stage], expected_s: Mapping[str, float],
               timings_file: str) -> Dict[str, float]:
    """Run every stage whose outputs are missing (the report always), printing progress and
    ETA; the seconds of each stage run are saved to ``timings_file`` as they finish."""
    timings = read_timings(timings_file)
    os.makedirs(osp.dirname(timings_file), exist_ok=True)
    start = time.time()
    spent_expected = spent_actual = 0.0
    for i, stage in enumerate(stages, 1):
        pace = spent_actual / spent_expected if spent_expected else 1.0
        print(f'[{i}/{len(stages)}] {stage.name:<22} elapsed {fmt(time.time() - start)}, '
              f'ETA {fmt(eta(stages[i - 1:], expected_s, pace))}', flush=True)
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
        spent_expected += expected_s.get(stage.kind, 0)
        spent_actual += took
        print(f'         done in {fmt(took)}', flush=True)
    print(f'demo finished in {fmt(time.time() - start)}')
    return timings
