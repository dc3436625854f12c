"""Preemption as Slurm does it, on the test cluster: a tools/slurm_train.sh job submitted with
``sbatch --requeue`` and REQUEUE=1 (two CPU tasks) is stopped mid-run by Slurm's own SIGUSR1
before its time limit, by ``scontrol requeue`` or by ``scancel --signal=TERM``; every
task saves, the job requeues, resumes from last_checkpoint and ends with weights, optimizer
and RNG states equal bit for bit to an uninterrupted tools/dist_train.sh run."""
import os
import re
import shlex
import time

import pytest
from slurm_testcluster import FINAL_STATES
from support import free_port

from support import ROOT, assert_identical
from test_launchers_on_slurm import ADE, CPU_TASKS, run

ITERS = 60   # 0.4 to 0.6 s each on 2 busy cores: the resumed run ends before another signal
#: the test-only hook that slows a job's first run, so Slurm's signal finds it running
SLOW_HOOK = '''
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SlowFirstRunHook(Hook):
    """Sleep after every training iteration of a Slurm job's first run (no RNG, no state)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if os.environ.get('SLURM_RESTART_COUNT', '0') == '0':
            time.sleep(self.seconds)
'''


@pytest.fixture(scope='module')
def options(ade_options):
    """ITERS iterations, validation and the regular checkpoint at the end only."""
    return ade_options + [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
                          f'default_hooks.checkpoint.interval={ITERS}']


@pytest.fixture(scope='module')
def uninterrupted(options, tmp_path_factory):
    """The final checkpoint of the run without preemption (tools/dist_train.sh, 2 processes)."""
    work = tmp_path_factory.mktemp('uninterrupted')
    run(['bash', 'tools/dist_train.sh', ADE, '2', '--work-dir', str(work), '--cfg-options',
         *options], env=dict(PORT=str(free_port())))
    return work / f'iter_{ITERS}.pth'


def slow_config(folder, seconds):
    """The tiny ADE20K config plus SlowFirstRunHook(seconds), written to ``folder``."""
    from mmengine.config import Config
    (folder / 'slow_first_run.py').write_text(SLOW_HOOK)
    base = Config.fromfile(ADE)
    imports = dict(base.custom_imports)
    imports['imports'] = [*imports['imports'], 'slow_first_run']
    hooks = [*base.custom_hooks, dict(type='SlowFirstRunHook', seconds=seconds)]
    path = folder / 'slow_ade.py'
    path.write_text(f'_base_ = [{ADE!r}]\ncustom_imports = {imports!r}\n'
                    f'custom_hooks = {hooks!r}\n')
    return str(path)


def submit_training(cluster, config, work_dir, options, sbatch_args, pythonpath=''):
    """sbatch --requeue a REQUEUE=1 tools/slurm_train.sh job of two CPU tasks (--wrap 'exec
    ...', as docs/usage.md says); its id and output file (appended to by every run)."""
    log = work_dir.parent / f'{work_dir.name}.out'
    command = 'exec ' + ' '.join(shlex.quote(a) for a in [
        'tools/slurm_train.sh', cluster.partition, 'preempt', config, str(work_dir),
        '--cfg-options', *options])
    env = {**CPU_TASKS, 'REQUEUE': '1', 'MASTER_PORT': str(free_port()),
           'PYTHONPATH': pythonpath}
    job = cluster.submit(['--requeue', '-n', '2', '-c', '1', '--chdir', ROOT,
                          '--open-mode=append', '-o', str(log), *sbatch_args,
                          '--wrap', command], env=env)
    return job, log


def follow(cluster, job, log, timeout=900):
    """Poll the job until it completes: (seconds since the call, JobState, Restarts) at each
    change. Fails, with the job's output, on another final state or after ``timeout``."""
    start, seen = time.time(), []
    while time.time() - start < timeout:
        info = cluster.job(job)
        now = (info['JobState'], int(info['Restarts']))
        if not seen or seen[-1][1:] != now:
            seen.append((round(time.time() - start, 1), *now))
        if now[0] == 'COMPLETED':
            return seen
        if now[0] in FINAL_STATES:
            break
        time.sleep(0.5)
    raise AssertionError(f'job {job}: {seen}\n{log.read_text()[-4000:]}\n{cluster.log_tails()}')


def requeue_seconds(states):
    """Seconds from the end of the job's first run (the state after its first RUNNING; the
    first state seen when it was stopped before ``follow`` began) to its second run's start."""
    first = [i for i, (_, state, restarts) in enumerate(states)
             if state == 'RUNNING' and restarts == 0]
    ended = states[first[0] + 1][0] if first else states[0][0]
    started = next(t for t, state, restarts in states if state == 'RUNNING' and restarts >= 1)
    return started - ended


def wait_for_iteration(log, iteration, timeout=300):
    """Wait until the job's output logs training iteration ``iteration``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text() if log.exists() else ''
        if any(int(i) >= iteration for i in re.findall(r'Iter\(train\) +\[ *(\d+)/', text)):
            return
        time.sleep(0.5)
    raise AssertionError(f'iteration {iteration} not logged in {timeout} s\n{text[-3000:]}')


def check_resumed(log, work_dir, uninterrupted, signal_name, self_requeue, context):
    """Both tasks stopped on the signal after the same iteration, saved, and the job exited 75
    (and requeued itself when ``self_requeue``); the next run resumed from that iteration; the
    end equals the uninterrupted run bit for bit. The iteration."""
    text = log.read_text()
    stops = re.findall(r'preempted \((SIG\w+|signal received by another rank)\): stopped after '
                       r'iteration (\d+)', text)
    assert len(stops) >= 2 and signal_name in {s for s, _ in stops}, (context, text[-4000:])
    stopped = int(stops[0][1])
    assert stops[1][1] == str(stopped), (context, stops)
    if self_requeue:
        assert re.search(r'preempted: requeueing Slurm job \d+; it resumes', text), context
    assert re.search(rf'resumed epoch: \d+, iter: {stopped}\b', text), (context, text[-4000:])
    assert_identical(uninterrupted, work_dir / f'iter_{ITERS}.pth',
                     f'{context}, stopped after iteration {stopped}')
    return stopped


def test_slurms_usr1_before_the_time_limit(slurm_cluster, options, uninterrupted, tmp_path):
    # -t 3 --signal=USR1@60: Slurm signals when the time left is within 60 s plus its timer's
    # resolution (measured: about 105 s after the start); the first run sleeps 2 s an
    # iteration so the signal finds it training (the start-up took up to 50 s on 2 busy cores)
    work = tmp_path / 'work'
    job, log = submit_training(slurm_cluster, slow_config(tmp_path, 2.0), work, options,
                               ['-t', '3', '--signal=USR1@60'], pythonpath=str(tmp_path))
    states = follow(slurm_cluster, job, log)
    stopped = check_resumed(log, work, uninterrupted, 'SIGUSR1', True,
                            'USR1 before the time limit')
    assert 0 < stopped < ITERS and states[-1][2] >= 1, states
    print(f'\nUSR1: stopped after iteration {stopped}; job states {states}; from the end of '
          f'the first run to the start of the next: {requeue_seconds(states):.1f} s')


# Not scancel --full: it also signals srun in the batch step, which answers SIGTERM by
# killing its tasks at once ("srun: forcing job termination"), before they can save.
@pytest.mark.parametrize('stop', [['scontrol', 'requeue'], ['scancel', '--signal=TERM']],
                         ids=['scontrol-requeue', 'scancel-term'])
def test_preempted_from_outside(slurm_cluster, options, uninterrupted, tmp_path, stop):
    work = tmp_path / 'work'
    job, log = submit_training(slurm_cluster, ADE, work, options, [])
    wait_for_iteration(log, 3)
    slurm_cluster.run([*stop, job])
    states = follow(slurm_cluster, job, log)
    # scontrol requeue: Slurm requeues the job itself; scancel: the job requeues itself
    stopped = check_resumed(log, work, uninterrupted, 'SIGTERM', stop[0] == 'scancel',
                            ' '.join(stop))
    assert states[-1][2] >= 1, states
    print(f'\n{" ".join(stop)}: stopped after iteration {stopped}; job states {states}; from '
          f'the command to the start of the next run: {requeue_seconds(states):.1f} s')
