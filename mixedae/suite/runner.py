"""The one-node runner of a run matrix (``tools/results.py run``): pretraining entries, then
every transfer run's training and test, one after another on this machine.

A run whose metrics exist is skipped; a run with a checkpoint (``last_checkpoint`` in its work
dir) resumes from it; a run that stops on a preemption signal (exit 75) or fails is reported and
the next run starts. Each run's output goes to ``<work_dir>/results_run.log``, and to the
terminal without MMEngine's config dump, environment report and hook order (:func:`console_lines`).
The runner ends with one summary line per entry (:class:`Outcome`).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, TextIO

from mixedae.engine.hooks.preemption_hook import EXIT_PREEMPTED
from .results import metric_text, run_commands, run_name

#: the file in a run's work dir that receives the output of its commands
RUN_LOG = 'results_run.log'

#: runs one shell command, its output appended to a log file; returns its exit status
Execute = Callable[[str, str], int]


@dataclass(frozen=True)
class Outcome:
    """How one entry of the matrix ended: ``state`` is done, skipped, preempted or failed."""
    name: str
    state: str
    detail: str = ''

    def line(self) -> str:
        return f'{self.name}: {self.state}' + (f', {self.detail}' if self.detail else '')


#: the start of an MMEngine log record on the console: ``12/07 19:32:58 - mmengine - INFO - ``
_RECORD = re.compile(r'\d\d/\d\d \d\d:\d\d:\d\d - mmengine - [A-Z]+ - ')
#: multi-line records whose lines stay in the log file: the config and the hook order
_BULKY = ('Config:', 'Hooks will be executed in the following order:')
#: a line inside a skipped record that is not part of it (another rank's traceback or warning)
_OUTSIDE = re.compile(r'Traceback|Error|error:|Warning')


def console_lines(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` (a tool's output) without MMEngine's config dump, environment report and
    hook order: each such record up to the next record, traceback, warning or error. Every
    other line (losses, ETA, metrics and their tables, warnings, errors) is kept, in order."""
    skipping = False
    held = None  # a record with an empty message: the environment report or a table follows
    for line in lines:
        if held is not None:
            record, held = held, None
            if line.startswith('-' * 20):   # the environment report's first line
                skipping = True
                continue
            yield record
        record = _RECORD.match(line)
        if record:
            message = line[record.end():]
            skipping = message.startswith(_BULKY)
            if not message.strip():
                held = line
                continue
        elif skipping and _OUTSIDE.search(line):
            skipping = False
        if not skipping:
            yield line
    if held is not None:
        yield held


def _copied(lines: Iterable[str], log: TextIO) -> Iterator[str]:
    """``lines``, each written to ``log`` as it is read."""
    for line in lines:
        log.write(line)
        yield line


def execute_logged(cmd: str, log_path: str) -> int:
    """Run ``cmd`` with bash; its output is appended to ``log_path`` and goes to this process's
    stdout without the config dump, environment report and hook order (:func:`console_lines`).
    The exit status (a signal ``-N`` as 128 + N, as the shell reports it)."""
    os.makedirs(os.path.dirname(log_path) or '.', exist_ok=True)
    print(f'+ {cmd}\n  (full output, with the config and environment: {log_path})', flush=True)
    with open(log_path, 'a') as log:
        log.write(f'+ {cmd}\n')
        log.flush()
        proc = subprocess.Popen(['bash', '-c', cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors='replace')
        for line in console_lines(_copied(proc.stdout, log)):
            sys.stdout.write(line)
            sys.stdout.flush()
        status = proc.wait()
    return 128 - status if status < 0 else status


def has_checkpoint(work_dir: str) -> bool:
    """Whether a training in ``work_dir`` saved a checkpoint to resume from."""
    return os.path.isfile(os.path.join(work_dir, 'last_checkpoint'))


def _train(entry: dict, gpus: int, execute: Execute) -> Optional[Outcome]:
    """Train one entry (resuming from its checkpoint); None when it finished, else how it
    stopped."""
    name, log = run_name(entry), os.path.join(entry['work_dir'], RUN_LOG)
    resume = has_checkpoint(entry['work_dir'])
    if resume:
        print(f'{name}: resuming from {entry["work_dir"]}/last_checkpoint', flush=True)
    status = execute(run_commands(entry, gpus, resume)[0], log)
    if status == EXIT_PREEMPTED:
        return Outcome(name, 'preempted', f'exit {status}; run again to resume from '
                       f'{entry["work_dir"]}/last_checkpoint')
    if status:
        return Outcome(name, 'failed', f'training exit {status}, log {log}')
    return None


def run_entry(entry: dict, gpus: int, execute: Execute) -> Outcome:
    """Train then test a transfer run, or train then convert a pretraining entry."""
    name, log = run_name(entry), os.path.join(entry['work_dir'], RUN_LOG)
    stopped = _train(entry, gpus, execute)
    if stopped:
        return stopped
    second = run_commands(entry, gpus)[1]
    status = execute(second, log)
    if status:
        step = 'conversion' if 'name' in entry else 'test'
        return Outcome(name, 'failed', f'{step} exit {status}, log {log}')
    if 'name' in entry:
        return Outcome(name, 'done', f'wrote {entry["checkpoint"]}')
    return Outcome(name, 'done', metric_text(entry))


def run_matrix(matrix: dict, gpus: int, execute: Execute = execute_logged) -> List[Outcome]:
    """Run every pretraining entry, then every transfer run, in matrix order; never stops on a
    failed or preempted one. A transfer run waiting for a pretraining entry that did not finish
    is skipped. Inputs are checked beforehand by
    :func:`mixedae.suite.results.input_problems`."""
    outcomes: List[Outcome] = []
    unfinished = {}
    for entry in matrix.get('pretrain', []):
        if os.path.isfile(entry['checkpoint']):
            outcomes.append(Outcome(run_name(entry), 'skipped',
                                    f'{entry["checkpoint"]} exists'))
            continue
        outcome = run_entry(entry, gpus, execute)
        outcomes.append(outcome)
        if outcome.state != 'done':
            unfinished[entry['checkpoint']] = outcome
    for run in matrix.get('runs', []):
        name = run_name(run)
        if os.path.isfile(run['metrics']):
            outcomes.append(Outcome(name, 'skipped', f'{run["metrics"]} exists ('
                                    f'{metric_text(run)})'))
        elif run.get('checkpoint') in unfinished:
            waits = unfinished[run['checkpoint']]
            outcomes.append(Outcome(name, 'skipped', f'its encoder {run["checkpoint"]} comes '
                                    f'from {waits.name}, which {waits.state}'))
        else:
            outcomes.append(run_entry(run, gpus, execute))
    return outcomes


def exit_status(outcomes: List[Outcome]) -> int:
    """1 when a run failed, else 75 when one was preempted, else 0."""
    states = {o.state for o in outcomes}
    return 1 if 'failed' in states else EXIT_PREEMPTED if 'preempted' in states else 0

