"""``make demo``: the whole benchmark, small, on the built-in generated data.

``presets`` (methods and scales), ``run_configs`` (each run's config, set by key), ``runner``
(child processes), ``stages`` (what each stage does), ``plan`` (the stages in order),
``schedule`` (reuse, timing, ETA), ``report`` and ``hr_tables`` (``report.md`` and its
figures).
"""
from __future__ import annotations

import os.path as osp
import shutil

from ..repo import Repo
from .presets import PRESETS
from .report import seed_values, write_report
from .schedule import read_timings, run_stages
from .plan import plan
from .stages import Demo


def run_demo(repo: Repo, out: str, data: str, preset: str, force: bool) -> str:
    """Run (or resume) the demo of ``preset`` in ``out`` with data in ``data``; the path of
    the report. ``force`` deletes both folders first."""
    if force:
        for path in (out, data):
            shutil.rmtree(path, ignore_errors=True)
    demo = Demo(repo, osp.abspath(out), osp.abspath(data), PRESETS[preset])
    timings_file = osp.join(demo.out, 'timings.json')

    def report() -> None:
        write_report(demo, seed_values(demo), read_timings(timings_file))

    run_stages(plan(demo, report), demo.p.expected_s, timings_file, demo.p.parallel)
    return osp.join(demo.out, 'report.md')
