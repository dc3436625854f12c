"""Running a list of stages in order: finished stages reused, each stage timed, an ETA from the
times measured so far (per kind of stage) and the preset's expected times for kinds not run yet.
Consecutive training stages of one kind may run side by side (``parallel``: a GPU preset's small
models share the card)."""
from __future__ import annotations

import json
import os
import os.path as osp
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
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


#: stage kinds whose consecutive stages are independent child processes (may run side by side)
PARALLEL_KINDS = ('pretrain', 'probe', 'ade20k', 'coco')


def batches(stages: Sequence[Stage], parallel: int) -> List[List[Stage]]:
    """The stages in order, cut into batches that run together: up to ``parallel`` consecutive
    stages of one kind of :data:`PARALLEL_KINDS`; every other stage alone."""
    out: List[List[Stage]] = []
    for stage in stages:
        last = out[-1] if out else []
        if (stage.kind in PARALLEL_KINDS and last and last[0].kind == stage.kind
                and len(last) < parallel):
            last.append(stage)
        else:
            out.append([stage])
    return out


def eta(stages: Sequence[Stage], expected_s: Mapping[str, float],
        measured: Mapping[str, Sequence[float]], parallel: int = 1) -> float:
    """Seconds left for the stages not yet done (the report always runs): per stage, the mean
    time of its kind measured in this run; for a kind not run yet, its expected time times the
    pace so far (measured over expected, summed over the kinds run). Stages of
    :data:`PARALLEL_KINDS` count 1 / ``parallel`` of their time."""
    spent = sum(sum(t) for t in measured.values())
    planned = sum(expected_s.get(kind, 0) * len(t) for kind, t in measured.items())
    pace = spent / planned if planned else 1.0
    return sum((statistics.fmean(measured[s.kind]) if measured.get(s.kind)
                else pace * expected_s.get(s.kind, 0)) / (parallel if s.kind in PARALLEL_KINDS
                                                          else 1)
               for s in stages if s.kind == 'report' or not s.done())


def _timed(stage: Stage) -> float:
    t0 = time.time()
    stage.run()
    return time.time() - t0


def run_stages(stages: Sequence[Stage], expected_s: Mapping[str, float], timings_file: str,
               parallel: int = 1) -> Dict[str, float]:
    """Run every stage whose outputs are missing (the report always), in :func:`batches` of up
    to ``parallel``, printing progress and ETA; the seconds of each stage run (its own wall
    time, side by side with its batch) are saved to ``timings_file`` as batches finish."""
    timings = read_timings(timings_file)
    os.makedirs(osp.dirname(timings_file), exist_ok=True)
    start = time.time()
    measured: Dict[str, List[float]] = {}
    i = 0
    for batch in batches(stages, parallel):
        todo = []
        for stage in batch:
            i += 1
            print(f'[{i}/{len(stages)}] {stage.name:<22} elapsed {fmt(time.time() - start)}, '
                  f'ETA {fmt(eta(stages[i - 1:], expected_s, measured, parallel))}', flush=True)
            if stage.done() and stage.kind != 'report':
                print('         reused (outputs exist)', flush=True)
            else:
                todo.append(stage)
        if len(todo) > 1:
            with ThreadPoolExecutor(len(todo)) as pool:
                took = list(pool.map(_timed, todo))
        else:
            took = [_timed(stage) for stage in todo]
        for stage, seconds in zip(todo, took):
            if stage.kind != 'report':
                timings[stage.name] = seconds
            measured.setdefault(stage.kind, []).append(seconds)
            print(f'         {stage.name}: done in {fmt(seconds)}', flush=True)
        if todo:
            with atomic_write(timings_file) as f:
                json.dump(timings, f, indent=1)
    print(f'demo finished in {fmt(time.time() - start)}')
    return timings
