"""results.py submit / status without a cluster: time limits, the sbatch lines, the state of a
run from Slurm's answers and its files, resubmission rules and the refusals before anything is
submitted (the same on a real cluster: tests/slurm/test_submit.py)."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from support import REPO, load_tool
from mixedae.suite.results import load_matrix
from mixedae.suite.slurm import (JOB_PORT, Job, Slurm, SubmitOptions, entry_status, parse_sacct,
                                 parse_scontrol_job, parse_squeue, parse_time_limit, progress,
                                 read_record, submit_matrix, submit_problems, eval_job_args,
                                 train_job_args)
from mixedae.utils.errors import UserInputError

ADE = REPO.path('configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')


@pytest.mark.parametrize('text,seconds', [
    ('90', 5400), ('2:30', 150), ('1:00:05', 3605), ('2-3', 183600), ('1-0:10', 87000),
    ('0-0:0:59', 59), ('UNLIMITED', None)])
def test_time_limits_in_every_slurm_format(text, seconds):
    assert parse_time_limit(text) == seconds


def test_a_bad_time_limit_is_named():
    with pytest.raises(ValueError, match="not a Slurm time limit: '1h'"):
        parse_time_limit('1h')


def test_client_answers_are_parsed():
    assert parse_squeue('12|PENDING|1|BeginTime\n13|RUNNING|0|None\n') == {
        '12': Job('12', 'PENDING', 1, '', 'BeginTime'), '13': Job('13', 'RUNNING', 0, '', 'None')}
    assert parse_sacct('7|CANCELLED by 0|0:15\n8|COMPLETED|0:0\n') == {
        '7': Job('7', 'CANCELLED', 0, '0:15'), '8': Job('8', 'COMPLETED', 0, '0:0')}
    job = parse_scontrol_job('JobId=9 JobName=x UserId=root(0) JobState=FAILED Reason='
                             'NonZeroExitCode Dependency=(null) Requeue=1 Restarts=2 '
                             'BatchFlag=1 ExitCode=1:0')
    assert job == Job('9', 'FAILED', 2, '1:0', 'NonZeroExitCode') and not job.active
    assert not Job('3', 'PENDING', reason='DependencyNeverSatisfied').active
    assert Job('3', 'PENDING', reason='Dependency').active


def test_progress_is_the_last_logged_iteration(tmp_path):
    log = tmp_path / 'a.log'
    assert progress(str(log)) == ''
    log.write_text('Iter(train) [ 5/40]  lr: 1\nIter(train) [10/40]  lr: 1\nIter(val) [2/4]\n')
    assert progress(str(log)) == 'iteration 10/40'
    log.write_text('Epoch(train)  [3][ 1/2]  lr: 1\n')
    assert progress(str(log)) == 'epoch 3, iteration 1/2'


def write_matrix(tmp_path, runs, **top):
    path = tmp_path / 'matrix.json'
    path.write_text(json.dumps(dict(gpus=2, runs=runs, **top)))
    return load_matrix(str(path))


def ade_run(tmp_path, method, root, **extra):
    options = ' '.join(f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test'))
    return dict(method=method, task='ade20k', config=ADE, work_dir=str(tmp_path / method),
                metrics=str(tmp_path / f'{method}.json'), train_args=f'--cfg-options {options}',
                test_args=f'--cfg-options {options}', **extra)


OPTS = SubmitOptions(partition='debug', time='10:00', signal_lead=60, gpus=2, gpus_per_node=2,
                     cpus_per_task=1, gres=False)


def test_train_and_test_jobs(tmp_path, ade_root):
    run = write_matrix(tmp_path, [ade_run(tmp_path, 'a', ade_root)])['runs'][0]
    args = train_job_args(run, OPTS)
    assert args[:-1] == ['--requeue', '-p', 'debug', '--nodes=1', '--ntasks-per-node=2',
                         '--cpus-per-task=1', '--job-name=mixedae-a-ade20k-train',
                         f'--output={tmp_path}/a/slurm_train.log', '--open-mode=append',
                         '--time=10:00', '--signal=USR1@60']
    wrap = args[-1][len('--wrap='):]
    assert wrap.startswith(f'trap : TERM; R=; [ -f {tmp_path}/a/last_checkpoint ] && R=--resume; REQUEUE=1 '
                           'SIGNAL_LEAD= GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 MASTER_PORT='
                           '${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 20000))} GRES= '
                           f'tools/slurm_train.sh debug mixedae-a-ade20k {ADE} $R --work-dir '
                           f'{tmp_path}/a --cfg-options')
    assert wrap.endswith(f'; s=$?; echo $s > {tmp_path}/a/slurm_train.exit; exit $s')
    test = eval_job_args(run, SubmitOptions(**dict(OPTS.__dict__, gres=True, account='acc')),
                         '41')
    assert '--gres=gpu:2' in test and '--account=acc' in test and '--requeue' not in test
    assert '--dependency=afterok:41' in test
    wrap = shlex.split(test[-1][len('--wrap='):].split(';')[1])
    assert wrap[:3] == ['GPUS=2', 'GPUS_PER_NODE=2', 'CPUS_PER_TASK=1']
    at = wrap.index('tools/slurm_test.sh')
    assert wrap[3].startswith('MASTER_PORT=') and not any(w.startswith('GRES') for w in wrap)
    assert wrap[at:at + 6] == ['tools/slurm_test.sh', 'debug', 'mixedae-a-ade20k', ADE,
                         f'$(cat {tmp_path}/a/last_checkpoint)', '--work-dir']
    assert wrap[wrap.index('--out-metrics') + 1] == f'{tmp_path}/a.json'


class FakeSlurm(Slurm):
    """Slurm as a dict of jobs: sbatch adds a PENDING job with the next id."""

    def __init__(self, path):
        super().__init__(env=dict(os.environ, PATH=path))
        self.known, self.submitted, self.cancelled = {}, [], []

    def partitions(self):
        return ['debug']

    def sbatch(self, args):
        job_id = str(100 + len(self.submitted))
        self.submitted.append(args)
        self.known[job_id] = Job(job_id, 'PENDING', reason='Priority')
        return job_id

    def cancel(self, ids):
        self.cancelled += ids

    def jobs(self, ids):
        return {i: self.known[i] for i in ids if i in self.known}


@pytest.fixture
def sbatch_path(tmp_path):
    """A PATH with an sbatch (never run: FakeSlurm answers)."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    (folder / 'sbatch').write_text('#!/bin/sh\nexit 1\n')
    (folder / 'sbatch').chmod(0o755)
    return str(folder)


def test_resubmission_skips_queued_done_and_failed_runs(tmp_path, ade_root, sbatch_path):
    matrix = write_matrix(tmp_path, [ade_run(tmp_path, m, ade_root) for m in ('a', 'b', 'c')])
    slurm = FakeSlurm(sbatch_path)
    lines = submit_matrix(matrix, OPTS, slurm)
    assert lines == [f'{m}/ade20k: submitted train job {100 + 2 * i}, test job {101 + 2 * i}'
                     for i, m in enumerate('abc')]
    assert read_record(matrix['runs'][1]) == {'train': '102', 'test': '103'}
    assert [a for a in slurm.submitted[1] if a.startswith('--dep')] == ['--dependency=afterok:100']
    # again: all queued, nothing submitted
    assert all('already queued (pending' in line for line in submit_matrix(matrix, OPTS, slurm))
    assert len(slurm.submitted) == 6
    # a done, b's training failed (its test waits forever), c's test failed
    (tmp_path / 'a.json').write_text(json.dumps({'mIoU': 20.0}))
    slurm.known.update({'102': Job('102', 'FAILED', 0, '1:0'),
                        '103': Job('103', 'PENDING', reason='DependencyNeverSatisfied'),
                        '104': Job('104', 'COMPLETED', 0, '0:0'),
                        '105': Job('105', 'FAILED', 0, '2:0')})
    lines = submit_matrix(matrix, OPTS, slurm)
    assert lines[0] == 'a/ade20k: done, not submitted again (ADE20K mIoU 20.00)'
    assert lines[1].startswith('b/ade20k: failed (train job 102 FAILED, exit status 1, log ')
    assert lines[1].endswith('not submitted again: resubmit with --retry-failed')
    assert lines[2].startswith('c/ade20k: failed (test job 105 FAILED, exit status 2')
    assert len(slurm.submitted) == 6
    lines = submit_matrix(matrix, OPTS, slurm, retry_failed=True)
    assert lines[1:] == ['b/ade20k: submitted train job 106, test job 107',
                         'c/ade20k: submitted train job 104, test job 108']
    assert slurm.cancelled == ['103']           # the test that could never start
    assert not any(a.startswith('--dep') for a in slurm.submitted[-1])   # training is done


def test_transfer_runs_wait_for_their_pretraining(tmp_path, ade_root, sbatch_path):
    pre = dict(name='mix', config=ADE, work_dir=str(tmp_path / 'mix'), nodes=1,
               checkpoint=str(tmp_path / 'mix.pth'), src_format='mixedae',
               train_args=ade_run(tmp_path, 'x', ade_root)['train_args'])
    matrix = write_matrix(tmp_path, [ade_run(tmp_path, 'a', ade_root,
                                             checkpoint=str(tmp_path / 'mix.pth')),
                                     ade_run(tmp_path, 'b', ade_root)], pretrain=[pre])
    slurm = FakeSlurm(sbatch_path)
    assert submit_matrix(matrix, OPTS, slurm) == [
        'pretrain/mix: submitted train job 100',
        'a/ade20k: submitted train job 101, test job 102 (after job 100)',
        'b/ade20k: submitted train job 103, test job 104']
    assert '--dependency=afterok:100' in slurm.submitted[1]
    wrap = slurm.submitted[0][-1]
    assert '&& .venv/bin/python tools/convert_checkpoint.py "$(cat ' in wrap
    assert f'{tmp_path}/mix.pth --src-format mixedae; s=$?' in wrap
    # the pretraining failed: its runs are not submitted again without --retry-failed
    slurm.known['100'] = Job('100', 'FAILED', 0, '1:0')
    slurm.known['101'] = Job('101', 'PENDING', reason='DependencyNeverSatisfied')
    lines = submit_matrix(matrix, OPTS, slurm)
    assert lines[1] == 'a/ade20k: not submitted: its encoder comes from pretrain/mix, which failed'
    lines = submit_matrix(matrix, OPTS, slurm, retry_failed=True)
    assert lines[:2] == ['pretrain/mix: submitted train job 105',
                         'a/ade20k: submitted train job 106, test job 107 (after job 105)']
    assert slurm.cancelled == ['101', '102']


def test_status_from_slurm_and_from_the_runs_files(tmp_path, ade_root):
    run = write_matrix(tmp_path, [ade_run(tmp_path, 'a', ade_root)])['runs'][0]
    assert entry_status(run, {}).line('a') == 'a: not submitted'
    os.makedirs(run['work_dir'])
    (tmp_path / 'a' / 'slurm_jobs.json').write_text('{"train": "5", "test": "6"}')
    (tmp_path / 'a' / 'slurm_train.log').write_text('Iter(train) [ 7/40]\n')
    jobs = {'5': Job('5', 'RUNNING', 2), '6': Job('6', 'PENDING', reason='Dependency')}
    assert entry_status(run, jobs).line('a') == ('a: running, train job 5, iteration 7/40, '
                                                 'requeued 2 times')
    jobs['5'] = Job('5', 'PENDING', 1, reason='BeginTime')
    assert entry_status(run, jobs).line('a') == ('a: pending, train job 5 (BeginTime), '
                                                 'requeued 1 time')
    jobs['5'] = Job('5', 'COMPLETED', 1, '0:0')
    jobs['6'] = Job('6', 'RUNNING')
    assert entry_status(run, jobs).line('a') == 'a: running, test job 6'
    # jobs the controller has forgotten (no accounting): the exit files say how they ended
    (tmp_path / 'a' / 'slurm_train.exit').write_text('0\n')
    (tmp_path / 'a' / 'slurm_test.exit').write_text('1\n')
    assert entry_status(run, {}).line('a') == (f'a: failed, test job 6 exit status 1, log '
                                               f'{tmp_path}/a/slurm_test.log')
    (tmp_path / 'a' / 'slurm_train.exit').unlink()
    assert entry_status(run, {}).state == 'failed'
    (tmp_path / 'a.json').write_text('{"mIoU": 33.333}')
    assert entry_status(run, {}).line('a') == 'a: done, ADE20K mIoU 33.33'


def test_refusals_before_anything_is_submitted(tmp_path, ade_root, sbatch_path):
    runs = [ade_run(tmp_path, 'a', ade_root),
            dict(ade_run(tmp_path, 'b', ade_root), checkpoint=str(tmp_path / 'none.pth'))]
    matrix = write_matrix(tmp_path, runs)
    no_sbatch = FakeSlurm(str(tmp_path))            # a PATH without sbatch
    assert submit_problems(matrix, OPTS, no_sbatch) == [
        'sbatch not found on PATH: run results.py submit on a Slurm login node (or use '
        'results.py run on one machine)']
    slurm = FakeSlurm(sbatch_path)
    opts = SubmitOptions(**dict(OPTS.__dict__, partition='gpu', time='1:30'))
    assert submit_problems(matrix, opts, slurm) == [
        "unknown partition 'gpu': --partition must be one that sinfo lists (debug)",
        f'b/ade20k: checkpoint not found: {tmp_path}/none.pth (convert the encoder with '
        'tools/convert_checkpoint.py, or add a "pretrain" entry that writes it)']
    opts = SubmitOptions(**dict(OPTS.__dict__, time='1'))
    assert submit_problems(matrix, opts, slurm)[0] == (
        '--time 1 (60 s) is not longer than SIGNAL_LEAD (60 s): every job would be told to '
        'stop before it starts; give a longer --time or a smaller SIGNAL_LEAD')
    with pytest.raises(UserInputError):
        submit_matrix(matrix, OPTS, slurm)
    assert slurm.submitted == [] and not os.path.exists(tmp_path / 'a' / 'slurm_jobs.json')


@pytest.mark.slow   # the tool in a subprocess
def test_the_tool_without_sbatch_exits_2_with_one_line(tmp_path, ade_root):
    matrix = tmp_path / 'm.json'
    matrix.write_text(json.dumps(dict(gpus=2, runs=[ade_run(tmp_path, 'a', ade_root)])))
    env = dict(os.environ, PATH=str(tmp_path))      # a PATH without sbatch
    out = subprocess.run([sys.executable, REPO.path('tools/results.py'), 'submit', str(matrix),
                          '--partition', 'debug'], env=env, capture_output=True, text=True,
                         cwd=REPO.root, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr == ('error: sbatch not found on PATH: run results.py submit on a Slurm '
                          'login node (or use results.py run on one machine)\n')
    assert not os.path.exists(tmp_path / 'a')


def test_shipped_matrix_pretrains_mixedae_before_its_transfer_runs():
    matrix = load_matrix(REPO.path('configs/matrix_vit-b16.json'))
    pre = next(p for p in matrix['pretrain'] if p['name'] == 'mixedae')
    waiting = [r['task'] for r in matrix['runs'] if r.get('checkpoint') == pre['checkpoint']]
    assert waiting == ['ade20k', 'coco'] and pre['train_args'] == '--amp'
    opts = SubmitOptions(partition='p', time='24:00:00')
    args = train_job_args(pre, opts)
    assert '--nodes=1' in args and '--ntasks-per-node=8' in args and '--gres=gpu:8' in args
    assert '--signal=USR1@120' in args and '--time=24:00:00' in args
    assert (f'GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 MASTER_PORT={JOB_PORT} '
            'tools/slurm_train.sh p '
            f'mixedae-pretrain-mixedae {pre["config"]} $R --work-dir {pre["work_dir"]} --amp '
            '--cfg-options randomness.seed=0 && '
            f'.venv/bin/python tools/convert_checkpoint.py "$(cat {pre["work_dir"]}/'
            f'last_checkpoint)" pretrain/mixedae_vit-b16_backbone.pth --src-format mixedae; '
            's=$?') in args[-1]
    two_nodes = train_job_args(dict(pre, nodes=2), opts)
    assert '--nodes=2' in two_nodes and 'GPUS=16 GPUS_PER_NODE=8' in two_nodes[-1]
    # the port a job's processes meet on is the job's own
    port = subprocess.run(['sh', '-c', f'echo {JOB_PORT}'], env=dict(SLURM_JOB_ID='20123'),
                          capture_output=True, text=True).stdout
    assert port == '29623\n'
