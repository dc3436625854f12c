#!/usr/bin/env python
"""Transfer results over a run matrix (see mixedae/suite/results.py for the format).

    .venv/bin/python tools/results.py commands MATRIX.json          # print the train/test commands
    .venv/bin/python tools/results.py run MATRIX.json               # run them (skips finished runs)
    .venv/bin/python tools/results.py collect MATRIX.json --out DIR # results.md, results.csv, results.png

Missing runs are shown as "missing"; the published ViT-B numbers are added as reference rows.
"""
import argparse
import os
import subprocess
import sys

from mixedae.suite.plots import bar_chart
from mixedae.suite.results import (REFERENCE_RULE, collect, collect_ablations,
                                   compare_to_reference, load_matrix, results_markdown,
                                   run_commands, write_csv)
from mixedae.suite.tables import COLUMNS, markdown_table
from mixedae.utils.cli import run_tool
from mixedae.utils.io import atomic_write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['commands', 'run', 'collect'])
    parser.add_argument('matrix', help='matrix JSON file')
    parser.add_argument('--out', default='work_dirs/benchmark', help='collect: output folder')
    parser.add_argument('--gpus', type=int, help='override the matrix "gpus"')
    args = parser.parse_args(argv)
    try:
        matrix = load_matrix(args.matrix)
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    gpus = args.gpus or matrix.get('gpus', 8)
    if args.action == 'commands':
        for run in matrix.get('runs', []):
            print('\n'.join(run_commands(run, gpus)))
        return 0
    if args.action == 'run':
        for run in matrix.get('runs', []):
            if os.path.isfile(run['metrics']):
                print(f'skip {run["method"]}/{run["task"]}: {run["metrics"]} exists')
                continue
            for cmd in run_commands(run, gpus):
                print(f'+ {cmd}', flush=True)
                subprocess.run(['bash', '-c', cmd], check=True)
        return 0
    os.makedirs(args.out, exist_ok=True)
    rows = collect(matrix.get('runs', []))
    text = '## Results\n\n' + results_markdown(rows) + '\n'
    if 'reference' in matrix:
        diffs = compare_to_reference(matrix['runs'], matrix['reference'])
        text += (f'\n## Differences to {matrix["reference"]}\n\n'
                 + markdown_table(diffs, ['method'] + [t for _, _, t, _ in COLUMNS]) + '\n\n'
                 + REFERENCE_RULE + '\n')
    abl_rows = collect_ablations(matrix.get('ablations', []))
    if abl_rows:
        header = ['ablation'] + [k for k in abl_rows[0] if k != 'ablation']
        text += '\n## Ablations\n\n' + markdown_table(abl_rows, header) + '\n'
        write_csv(abl_rows, os.path.join(args.out, 'ablations.csv'))
    with atomic_write(os.path.join(args.out, 'results.md')) as f:
        f.write(text)
    write_csv(rows, os.path.join(args.out, 'results.csv'))
    bar_chart(rows, os.path.join(args.out, 'results.png'), 'Transfer results')
    print(text)
    return 0


if __name__ == '__main__':
    run_tool(main)
