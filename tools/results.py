#!/usr/bin/env python
"""Transfer results over a run matrix (see mixedae/suite/results.py for the format).

    .venv/bin/python tools/results.py commands MATRIX.json          # print the commands:
        # each pretraining (train, convert) before the transfer runs (train, test)
    .venv/bin/python tools/results.py run MATRIX.json               # run them on this machine
    .venv/bin/python tools/results.py submit MATRIX.json --partition P [--account A] [--time T]
    .venv/bin/python tools/results.py status MATRIX.json            # where each Slurm run stands
    .venv/bin/python tools/results.py collect MATRIX.json --out DIR # results.md, .csv, .png

run: skips runs whose metrics exist, resumes a run from its checkpoint, goes on after a
preempted (exit 75) or failed run and ends with one summary line per run (exit status 1 when a
run failed, else 75 when one was preempted). submit: one Slurm job per training (requeued and
resumed on preemption) and one per test (after it); running it again submits only what is
neither done nor queued, failed runs only with --retry-failed. Both check every run's config,
checkpoint and data first. An option that the action does not read (status --out, collect
--partition) is refused, not ignored. Missing runs are shown as "missing" by collect; the
published ViT-B numbers are added as reference rows.
"""
import argparse
import os

from mixedae.suite.plots import bar_chart
from mixedae.suite.results import (REFERENCE_RULE, collect, collect_ablations,
                                   compare_to_reference, gpus_per_node, input_problems,
                                   load_matrix, results_markdown, run_commands, write_csv)
from mixedae.suite.runner import exit_status, run_matrix
from mixedae.suite.slurm import (Slurm, SubmitOptions, matrix_status, signal_lead,
                                 submit_matrix)
from mixedae.suite.tables import COLUMNS, markdown_table
from mixedae.utils.cli import positive_int, run_tool
from mixedae.utils.errors import UserInputError
from mixedae.utils.io import atomic_write


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['commands', 'run', 'submit', 'status', 'collect'])
    parser.add_argument('matrix', help='matrix JSON file')
    parser.add_argument('--out', default='work_dirs/benchmark', help='collect: output folder')
    parser.add_argument('--gpus', type=positive_int, help='override the matrix "gpus"')
    slurm = parser.add_argument_group('submit (environment: SIGNAL_LEAD, seconds before the '
                                      'time limit at which a run saves and requeues; default 120)')
    slurm.add_argument('--partition', help='the Slurm partition (sinfo lists them)')
    slurm.add_argument('--account', help='the Slurm account to charge')
    slurm.add_argument('--time', help='time limit of each job (Slurm format, e.g. 24:00:00); '
                       'a run that reaches it saves, requeues and resumes')
    slurm.add_argument('--cpus-per-task', type=int, default=5,
                       help='CPU cores per task (data loading; default 5)')
    slurm.add_argument('--no-gres', action='store_true',
                       help='a CPU-only cluster: no --gres, the launchers get GRES= (the '
                       'tasks run on CPU)')
    slurm.add_argument('--retry-failed', action='store_true',
                       help='submit again the runs whose last job failed')
    args = parser.parse_args(argv)
    refuse_unread_options(args, parser)
    return args


#: option (its argparse dest) -> the actions that read it; any other action refuses it
READ_BY = {'out': ('collect',), 'gpus': ('commands', 'run', 'submit'),
           **{dest: ('submit',) for dest in ('partition', 'account', 'time', 'cpus_per_task',
                                             'no_gres', 'retry_failed')}}


def refuse_unread_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """An option given to an action that does not read it is an error, not ignored."""
    for dest, actions in READ_BY.items():
        if args.action not in actions and getattr(args, dest) != parser.get_default(dest):
            raise UserInputError(f'--{dest.replace("_", "-")} is not used by {args.action} '
                                 f'(only by {", ".join(actions)})')


def submit(matrix: dict, args: argparse.Namespace) -> int:
    if not args.partition:
        raise UserInputError('submit needs --partition P (a partition that sinfo lists)')
    opts = SubmitOptions(partition=args.partition, account=args.account, time=args.time,
                         signal_lead=signal_lead(os.environ), gpus=matrix['gpus'],
                         gpus_per_node=gpus_per_node(matrix), cpus_per_task=args.cpus_per_task,
                         gres=not args.no_gres)
    for line in submit_matrix(matrix, opts, Slurm(), args.retry_failed):
        print(line, flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    matrix = load_matrix(args.matrix)
    if args.gpus is not None:
        matrix['gpus'] = args.gpus
    matrix.setdefault('gpus', 8)
    if args.action == 'commands':
        for entry in [*matrix['pretrain'], *matrix.get('runs', [])]:
            print('\n'.join(run_commands(entry, matrix['gpus'])))
        return 0
    if args.action == 'run':
        problems = input_problems(matrix)
        if problems:
            raise UserInputError('\nerror: '.join(problems))
        outcomes = run_matrix(matrix, matrix['gpus'])
        print('summary:\n' + '\n'.join(o.line() for o in outcomes), flush=True)
        return exit_status(outcomes)
    if args.action == 'submit':
        return submit(matrix, args)
    if args.action == 'status':
        print('\n'.join(matrix_status(matrix, Slurm())), flush=True)
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
