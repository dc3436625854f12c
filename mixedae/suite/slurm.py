"""A run matrix as Slurm jobs (``tools/results.py submit`` / ``status``).

Each transfer run is two jobs: its training (``sbatch --requeue`` of ``tools/slurm_train.sh``
with ``REQUEUE=1``: a preempted or time-limited run saves, requeues itself and resumes) and its
test (``tools/slurm_test.sh``, ``--dependency=afterok`` on the training), which writes the
metrics file. A ``pretrain`` entry is one job (training, then the conversion of its last
checkpoint), and the transfer runs that load its encoder wait for it (``afterok``).

The job ids of an entry are recorded in ``<work_dir>/slurm_jobs.json``; the jobs write their
output to ``<work_dir>/slurm_{train,test}.log`` and their exit status to
``<work_dir>/slurm_{train,test}.exit``. Where a job stands comes from ``squeue`` while Slurm
holds it, then from ``sacct`` where accounting exists, else from ``scontrol show job`` (jobs
the controller still remembers) and those files.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from mixedae.utils.errors import UserInputError
from mixedae.utils.io import atomic_write
from .results import (convert_command, input_problems, last_checkpoint_arg,
                      metric_text, pretraining_of, run_name, eval_arguments, train_arguments)

#: a run's record of its jobs, in its work dir
STATE_FILE = 'slurm_jobs.json'
#: Slurm job states in which a job still holds, or waits for, resources
ACTIVE_STATES = frozenset({'PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED',
                           'REQUEUE_HOLD', 'REQUEUE_FED', 'RESIZING', 'SIGNALING', 'STAGE_OUT',
                           'SUSPENDED', 'STOPPED'})
#: the pending reason of a job whose dependency failed: it will never start
NEVER = 'DependencyNeverSatisfied'
#: SIGNAL_LEAD's default in tools/slurm_train.sh
DEFAULT_SIGNAL_LEAD = 120

#: runs a client command: (argv, env) -> CompletedProcess with text stdout / stderr
Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class Job:
    """What Slurm says of one job: ``state`` is its JobState (PENDING, RUNNING, COMPLETED,
    FAILED, ...), ``exit_code`` Slurm's ``status:signal``."""
    id: str
    state: str
    restarts: int = 0
    exit_code: str = ''
    reason: str = ''

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES and self.reason != NEVER


@dataclass(frozen=True)
class Status:
    """Where an entry stands: ``state`` is done, not submitted, pending, running or failed;
    ``train_ok``: its training (and, for pretraining, conversion) finished."""
    state: str
    detail: str = ''
    train_ok: bool = False
    stuck: Sequence[str] = ()     # pending jobs that can never start (a failed dependency)

    def line(self, name: str) -> str:
        return f'{name}: {self.state}' + (f', {self.detail}' if self.detail else '')


# ---------------------------------------------------------------- time limits and signals

def parse_time_limit(text: str) -> Optional[int]:
    """Seconds of a Slurm ``--time`` value (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``); None for ``INFINITE`` / ``UNLIMITED``."""
    if text.upper() in ('INFINITE', 'UNLIMITED'):
        return None
    found = re.fullmatch(r'(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?', text)
    if not found:
        raise ValueError(f'not a Slurm time limit: {text!r} (minutes, M:S, H:M:S, D-H, D-H:M '
                         'or D-H:M:S)')
    days, a, b, c = found.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:                      # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + s
    if len(parts) == 1:
        return parts[0] * 60                  # minutes
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]       # M:S
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def signal_lead(env: Dict[str, str]) -> int:
    """``SIGNAL_LEAD`` (seconds; default 120) as tools/slurm_train.sh reads it."""
    text = env.get('SIGNAL_LEAD', str(DEFAULT_SIGNAL_LEAD))
    if not text.isdigit():
        raise UserInputError(f"SIGNAL_LEAD must be a number of seconds, got {text!r}")
    return int(text)


# ---------------------------------------------------------------- parsing the client commands

def parse_squeue(text: str) -> Dict[str, Job]:
    """Lines ``id|state|restarts|reason`` (``squeue -h -o '%i|%T|...'`` as :class:`Slurm` asks)."""
    jobs = {}
    for line in text.splitlines():
        if line.strip():
            job_id, state, restarts, reason = line.strip().split('|', 3)
            jobs[job_id] = Job(job_id, state, int(restarts or 0), '', reason)
    return jobs


def parse_sacct(text: str) -> Dict[str, Job]:
    """Lines ``id|state|exit_code`` of ``sacct -n -P -X -o JobID,State,ExitCode``; a state
    such as ``CANCELLED by 0`` is cut to its first word."""
    jobs = {}
    for line in text.splitlines():
        if line.strip():
            job_id, state, exit_code = line.strip().split('|', 2)
            jobs[job_id] = Job(job_id, state.split()[0], 0, exit_code)
    return jobs


def parse_scontrol_job(text: str) -> Job:
    """One job of ``scontrol show job -o ID`` (``Key=Value`` words)."""
    fields = dict(word.split('=', 1) for word in text.split() if '=' in word)
    return Job(fields['JobId'], fields['JobState'], int(fields.get('Restarts', 0)),
               fields.get('ExitCode', ''), fields.get('Reason', ''))


class Slurm:
    """The Slurm client commands this module runs (all with ``env``)."""

    def __init__(self, env: Optional[Dict[str, str]] = None, run: Runner = subprocess.run):
        self.env = dict(os.environ if env is None else env)
        self._run = run

    def call(self, *argv: str) -> subprocess.CompletedProcess:
        try:
            return self._run(list(argv), env=self.env, capture_output=True, text=True)
        except FileNotFoundError as err:
            raise UserInputError(f'{argv[0]} not found on PATH: run results.py submit / status '
                                 'on a Slurm login node') from err

    def partitions(self) -> List[str]:
        out = self.call('sinfo', '-h', '-o', '%R')
        if out.returncode:
            raise UserInputError(f'sinfo failed ({out.stderr.strip()}): is this a Slurm login '
                                 'node with the controller reachable?')
        return sorted(set(out.stdout.split()))

    def sbatch(self, args: Sequence[str]) -> str:
        out = self.call('sbatch', '--parsable', *args)
        if out.returncode:
            raise RuntimeError(f'sbatch {" ".join(map(shlex.quote, args))} failed: '
                               f'{out.stderr.strip()}')
        return out.stdout.strip().split(';')[0]

    def cancel(self, ids: Sequence[str]) -> None:
        if ids:
            self.call('scancel', *ids)

    def jobs(self, ids: Sequence[str]) -> Dict[str, Job]:
        """What Slurm knows of ``ids``: squeue, then sacct (where accounting is on), else
        ``scontrol show job``; ids it no longer knows are absent."""
        ids = [i for i in ids if i]
        if not ids:
            return {}
        out = self.call('squeue', '-h', '-t', 'all', '-j', ','.join(ids), '-O',
                        'JobID:|,State:|,RestartCnt:|,Reason:')
        found = parse_squeue(out.stdout) if out.returncode == 0 else {}
        found = {k: v for k, v in found.items() if k in ids}
        rest = [i for i in ids if i not in found or not found[i].active]
        if rest:
            acct = self.call('sacct', '-n', '-P', '-X', '-j', ','.join(rest), '-o',
                             'JobID,State,ExitCode')
            if acct.returncode == 0:
                found.update({k: v for k, v in parse_sacct(acct.stdout).items() if k in rest})
            else:
                for job_id in rest:
                    shown = self.call('scontrol', 'show', 'job', '-o', job_id)
                    if shown.returncode == 0 and shown.stdout.strip():
                        found[job_id] = parse_scontrol_job(shown.stdout)
        return found


# ---------------------------------------------------------------- one entry's files

def record_path(entry: dict) -> str:
    return os.path.join(entry['work_dir'], STATE_FILE)


def read_record(entry: dict) -> Dict[str, str]:
    """The job ids recorded for an entry ({} when never submitted)."""
    path = record_path(entry)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_record(entry: dict, record: Dict[str, str]) -> None:
    os.makedirs(entry['work_dir'], exist_ok=True)
    with atomic_write(record_path(entry)) as f:
        json.dump(record, f)


def job_file(entry: dict, step: str, suffix: str) -> str:
    """``<work_dir>/slurm_<step>.<suffix>``: a job's log (``log``) or exit status (``exit``)."""
    return os.path.join(entry['work_dir'], f'slurm_{step}.{suffix}')


def exit_file_status(entry: dict, step: str) -> Optional[int]:
    path = job_file(entry, step, 'exit')
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    return int(text) if text.lstrip('-').isdigit() else None


def progress(log_path: str) -> str:
    """The last training iteration a log reports: ``iteration 20/40`` or ``epoch 3, iteration
    5/10`` ('' before the first)."""
    if not os.path.isfile(log_path):
        return ''
    with open(log_path, 'rb') as f:
        f.seek(max(0, os.path.getsize(log_path) - 65536))
        text = f.read().decode('utf-8', 'replace')
    found = re.findall(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]'
                       r'|Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]', text)
    if not found:
        return ''
    it, total, epoch, ep_it, ep_total = found[-1]
    return f'iteration {it}/{total}' if it else f'epoch {epoch}, iteration {ep_it}/{ep_total}'


def _times(n: int) -> str:
    return f'requeued {n} time{"s" if n != 1 else ""}'


def _step_status(entry: dict, step: str, job_id: str, jobs: Dict[str, Job]
                 ) -> Optional[Status]:
    """The status of an entry while its ``step`` job is active or after it failed; None when
    that job finished with status 0."""
    log = job_file(entry, step, 'log')
    job = jobs.get(job_id)
    if job is not None and job.reason == NEVER:
        return Status('failed', f'{step} job {job_id} can never start: a job it waits on '
                      'failed', stuck=(job_id,))
    if job is not None and job.active:
        extra = [_times(job.restarts)] if job.restarts else []
        if job.state == 'PENDING':
            return Status('pending', ', '.join([f'{step} job {job_id} ({job.reason})', *extra]))
        where = progress(log) if step == 'train' else ''
        return Status('running' if job.state == 'RUNNING' else job.state.lower(),
                      ', '.join(filter(None, [f'{step} job {job_id}', where, *extra])))
    if job is not None:
        code = job.exit_code.split(':')[0] if job.exit_code else ''
        if job.state == 'COMPLETED' and code in ('', '0'):
            return None
        return Status('failed', f'{step} job {job_id} {job.state}, exit status '
                      f'{code or exit_file_status(entry, step)}, log {log}')
    status = exit_file_status(entry, step)
    if status == 0:
        return None
    if status is None:
        return Status('failed', f'{step} job {job_id} is no longer known to Slurm and left no '
                      f'exit status, log {log}')
    return Status('failed', f'{step} job {job_id} exit status {status}, log {log}')


def entry_status(entry: dict, jobs: Dict[str, Job]) -> Status:
    """Where a pretraining entry or transfer run stands, from its files and ``jobs``."""
    pretrain = 'name' in entry
    if pretrain and os.path.isfile(entry['checkpoint']):
        return Status('done', f'wrote {entry["checkpoint"]}', train_ok=True)
    if not pretrain and os.path.isfile(entry['metrics']):
        return Status('done', metric_text(entry), train_ok=True)
    record = read_record(entry)
    if not record:
        return Status('not submitted')
    train = _step_status(entry, 'train', record['train'], jobs)
    if train is not None:
        if train.state == 'failed' and 'test' in record:
            test_job = jobs.get(record['test'])
            if test_job is not None and test_job.state == 'PENDING':   # waits forever
                return Status(train.state, train.detail, stuck=(*train.stuck, record['test']))
        return train
    if pretrain:
        return Status('failed', f'train job {record["train"]} ended without writing '
                      f'{entry["checkpoint"]}, log {job_file(entry, "train", "log")}',
                      train_ok=False)
    if 'test' not in record:
        return Status('failed', 'training finished, no test job recorded', train_ok=True)
    test = _step_status(entry, 'test', record['test'], jobs)
    if test is None:
        test = Status('failed', f'test job {record["test"]} ended without writing '
                      f'{entry["metrics"]}, log {job_file(entry, "test", "log")}')
    return Status(test.state, test.detail, train_ok=True, stuck=test.stuck)


def matrix_status(matrix: dict, slurm: Slurm) -> List[str]:
    """One line per entry of the matrix: pretraining entries, then transfer runs."""
    entries = [*matrix.get('pretrain', []), *matrix.get('runs', [])]
    ids = [i for e in entries for i in read_record(e).values()]
    jobs = slurm.jobs(ids)
    return [entry_status(e, jobs).line(run_name(e)) for e in entries]


# ---------------------------------------------------------------- submission

@dataclass(frozen=True)
class SubmitOptions:
    """``results.py submit``'s options and the matrix's sizes."""
    partition: str
    account: Optional[str] = None
    time: Optional[str] = None
    signal_lead: int = DEFAULT_SIGNAL_LEAD
    gpus: int = 8                 # tasks of a transfer run
    gpus_per_node: int = 8
    cpus_per_task: int = 5
    gres: bool = True             # request --gres=gpu:<gpus_per_node>
    job_prefix: str = 'mixedae'


def _sbatch_common(entry: dict, step: str, opts: SubmitOptions, tasks: int) -> List[str]:
    """The sbatch options every job of the matrix shares: partition, account, time, size,
    name and output file."""
    per_node = min(opts.gpus_per_node, tasks)
    args = ['-p', opts.partition, f'--nodes={tasks // per_node}',
            f'--ntasks-per-node={per_node}', f'--cpus-per-task={opts.cpus_per_task}',
            f'--job-name={opts.job_prefix}-{run_name(entry).replace("/", "-")}-{step}',
            f'--output={job_file(entry, step, "log")}', '--open-mode=append']
    if opts.gres:
        args.append(f'--gres=gpu:{per_node}')
    if opts.account:
        args.append(f'--account={opts.account}')
    if opts.time:
        args.append(f'--time={opts.time}')
    return args


#: the rendezvous port of a job's processes, unless MASTER_PORT is set: one per job id, so
#: that jobs sharing a node do not collide (sh arithmetic, evaluated in the job)
JOB_PORT = '${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 20000))}'


def _launcher_env(opts: SubmitOptions, tasks: int) -> str:
    """The launchers' environment: tasks, tasks per node, cores per task, the rendezvous port
    (:data:`JOB_PORT`); ``GRES=`` (no ``--gres``: CPU tasks) on a CPU-only cluster."""
    per_node = min(opts.gpus_per_node, tasks)
    return (f'GPUS={tasks} GPUS_PER_NODE={per_node} CPUS_PER_TASK={opts.cpus_per_task} '
            f'MASTER_PORT={JOB_PORT}' + ('' if opts.gres else ' GRES='))


def _with_exit_file(entry: dict, step: str, commands: str) -> str:
    """``commands``, then their status written to the step's exit file and returned. The
    batch shell outlives Slurm's SIGTERM (preemption, ``scancel --full``) so that the
    launcher below it can save, requeue and report (a handler, not ``''``: the commands keep
    SIGTERM's default)."""
    path = shlex.quote(job_file(entry, step, 'exit'))
    return f'trap : TERM; {commands}; s=$?; echo $s > {path}; exit $s'


def train_job_args(entry: dict, opts: SubmitOptions, after: Optional[str] = None) -> List[str]:
    """sbatch arguments of the training job of a run or pretraining entry (``after``: the
    job id it waits for with ``afterok``)."""
    tasks = entry['nodes'] * opts.gpus_per_node if 'name' in entry else opts.gpus
    work = shlex.quote(os.path.join(entry['work_dir'], 'last_checkpoint'))
    name = f'{opts.job_prefix}-{run_name(entry).replace("/", "-")}'
    # sbatch --signal sends USR1 before the limit; inside the job SIGNAL_LEAD stays unset
    train = (f'R=; [ -f {work} ] && R=--resume; REQUEUE=1 SIGNAL_LEAD= '
             f'{_launcher_env(opts, tasks)} tools/slurm_train.sh {shlex.quote(opts.partition)} '
             f'{shlex.quote(name)} {shlex.quote(entry["config"])} $R {train_arguments(entry)}')
    if 'name' in entry:
        train = f'{train} && {convert_command(entry)}'
    args = ['--requeue', *_sbatch_common(entry, 'train', opts, tasks)]
    if opts.signal_lead:
        args.append(f'--signal=USR1@{opts.signal_lead}')
    if after:
        args.append(f'--dependency=afterok:{after}')
    return [*args, f'--wrap={_with_exit_file(entry, "train", train)}']


def eval_job_args(run: dict, opts: SubmitOptions, after: Optional[str] = None) -> List[str]:
    """sbatch arguments of a run's test job, after its training job ``after``."""
    name = f'{opts.job_prefix}-{run_name(run).replace("/", "-")}'
    test = (f'{_launcher_env(opts, opts.gpus)} tools/slurm_test.sh {shlex.quote(opts.partition)} '
            f'{shlex.quote(name)} {shlex.quote(run["config"])} '
            f'{last_checkpoint_arg(run["work_dir"])} {eval_arguments(run)}')
    args = _sbatch_common(run, 'test', opts, opts.gpus)
    if after:
        args.append(f'--dependency=afterok:{after}')
    return [*args, f'--wrap={_with_exit_file(run, "test", test)}']


def submit_problems(matrix: dict, opts: SubmitOptions, slurm: Slurm) -> List[str]:
    """Everything that stops a submission, one line each: no sbatch, a time limit not longer
    than SIGNAL_LEAD, an unknown partition, a missing config, checkpoint or data."""
    if shutil.which('sbatch', path=slurm.env.get('PATH')) is None:
        return ['sbatch not found on PATH: run results.py submit on a Slurm login node (or use '
                'results.py run on one machine)']
    problems = []
    if opts.time:
        try:
            limit = parse_time_limit(opts.time)
        except ValueError as err:
            problems.append(f'--time: {err}')
        else:
            if limit is not None and limit <= opts.signal_lead:
                problems.append(
                    f'--time {opts.time} ({limit} s) is not longer than SIGNAL_LEAD '
                    f'({opts.signal_lead} s): every job would be told to stop before it starts; '
                    'give a longer --time or a smaller SIGNAL_LEAD')
    known = slurm.partitions()
    if opts.partition not in known:
        problems.append(f'unknown partition {opts.partition!r}: --partition must be one that '
                        f'sinfo lists ({", ".join(known) or "none"})')
    return problems + input_problems(matrix)


def submit_matrix(matrix: dict, opts: SubmitOptions, slurm: Slurm,
                  retry_failed: bool = False) -> List[str]:
    """Submit what is neither done nor queued (and failed entries only with
    ``retry_failed``); one line per entry saying what was done. Checks every input first
    (:class:`UserInputError` with one line per problem, nothing submitted)."""
    problems = submit_problems(matrix, opts, slurm)
    if problems:
        raise UserInputError('\nerror: '.join(problems))
    entries = [*matrix.get('pretrain', []), *matrix.get('runs', [])]
    jobs = slurm.jobs([i for e in entries for i in read_record(e).values()])
    producers = pretraining_of(matrix)
    waits: Dict[str, Optional[str]] = {}     # pretraining checkpoint -> job id to wait for
    lines = []
    for entry in entries:
        name, status = run_name(entry), entry_status(entry, jobs)
        record = read_record(entry)
        if status.state == 'done':
            lines.append(f'{name}: done, not submitted again ({status.detail})')
            continue
        after = None
        if 'name' not in entry and entry.get('checkpoint') in producers:
            after = waits.get(entry['checkpoint'])
            if after == 'failed':
                lines.append(f'{name}: not submitted: its encoder comes from '
                             f'{run_name(producers[entry["checkpoint"]])}, which failed')
                continue
        if status.state not in ('not submitted', 'failed'):
            lines.append(f'{name}: already queued ({status.state}, {status.detail}), not '
                         'submitted again')
            if 'name' in entry:
                waits[entry['checkpoint']] = record['train']
            continue
        if status.state == 'failed' and not retry_failed:
            lines.append(f'{name}: failed ({status.detail}); not submitted again: resubmit '
                         'with --retry-failed')
            if 'name' in entry:
                waits[entry['checkpoint']] = 'failed'
            continue
        slurm.cancel(list(status.stuck))
        steps = ['test'] if status.train_ok and 'name' not in entry else ['train', 'test']
        for step in steps:                       # the outcome of an earlier submission
            if os.path.isfile(job_file(entry, step, 'exit')):
                os.remove(job_file(entry, step, 'exit'))
        if steps == ['test']:
            record = {'train': record['train'], 'test': slurm.sbatch(eval_job_args(entry, opts))}
        else:
            record = {'train': slurm.sbatch(train_job_args(entry, opts, after))}
            write_record(entry, record)          # recorded before the next sbatch can fail
            if 'name' in entry:
                waits[entry['checkpoint']] = record['train']
            else:
                record['test'] = slurm.sbatch(eval_job_args(entry, opts, record['train']))
        write_record(entry, record)
        lines.append(f'{name}: submitted ' + ', '.join(f'{k} job {v}' for k, v in record.items())
                     + (f' (after job {after})' if after else ''))
    return lines
