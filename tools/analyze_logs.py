#!/usr/bin/env python
"""Curves of logged scalars from MMEngine work dirs (as mmseg's and mmdet's analyze_logs.py).

    .venv/bin/python tools/analyze_logs.py plot_curve WORK_DIR [WORK_DIR ...] \\
        --keys loss lr [--legend NAME ...] --out curves.png
    .venv/bin/python tools/analyze_logs.py cal_train_time WORK_DIR [WORK_DIR ...]

Reads every ``<work_dir>/<timestamp>/vis_data/scalars.json`` (a resumed run's records replace
the ones it logged again). plot_curve: one panel per key, one line per work dir (training
records; validation metrics such as mIoU are drawn at the iteration they were logged).
cal_train_time: the median seconds per iteration after the first record, and the number of
iterations logged (it takes no --keys, --title or --out).
"""
import argparse
import os

from mixedae.suite.plots import plot_curves
from mixedae.suite.stats import read_records, steady_time_per_iter
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import InvalidInputError, MissingInputError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest='action', required=True)
    plot = actions.add_parser('plot_curve', help='one panel per key, one line per work dir')
    train_time = actions.add_parser('cal_train_time', help='median s / iteration per work dir')
    for sub in (plot, train_time):   # each takes only the options it uses: none is ignored
        sub.add_argument('work_dirs', nargs='+', help='work dirs of tools/train.py runs')
        sub.add_argument('--legend', nargs='+', help='one name per work dir (default: its name)')
    plot.add_argument('--keys', nargs='+', default=['loss'], help='scalars to plot')
    plot.add_argument('--title', default='', help='figure title')
    plot.add_argument('--out', default='curves.png', help='image file to write')
    args = parser.parse_args(argv)
    names = args.legend or [os.path.basename(os.path.normpath(d)) for d in args.work_dirs]
    if len(names) != len(args.work_dirs):
        raise InvalidInputError(f'--legend names {len(names)} runs for {len(args.work_dirs)} '
                                'work dirs')
    records = {}
    for name, work_dir in zip(names, args.work_dirs):
        records[name] = read_records(work_dir)
        if not records[name]:
            raise MissingInputError(f'{work_dir}: no <timestamp>/vis_data/scalars.json records '
                                    '(is it the work dir of a tools/train.py run?)')
    if args.action == 'cal_train_time':
        for name, recs in records.items():
            t = steady_time_per_iter([r for r in recs if 'loss' in r])
            steps = sum('loss' in r for r in recs)
            print(f'{name}: {t:.4f} s / iteration (median after the first record), '
                  f'{steps} training records' if t else f'{name}: too few records')
        return 0
    absent = [k for k in args.keys if not any(k in r for recs in records.values() for r in recs)]
    if absent:
        raise InvalidInputError(f'--keys {absent}: logged by none of the runs; logged: '
                                f'{sorted({k for rs in records.values() for r in rs for k in r})}')
    plot_curves(records, args.keys, args.out, args.title)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
