"""The shell launchers explain themselves, check their input and pass the right arguments on
(no GPU, no Slurm). The Slurm launchers run for real on a test cluster in tests/slurm (make
test-slurm); the stand-in srun here only shows what one node cannot: a multi-node launch."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from mmengine.config import Config

from support import ROOT
LAUNCHERS = {  # script: (minimum arguments, arguments it names in its usage)
    'dist_train.sh': (2, ['CONFIG', 'GPUS']),
    'dist_test.sh': (3, ['CONFIG', 'CHECKPOINT', 'GPUS']),
    'slurm_train.sh': (3, ['PARTITION', 'JOB_NAME', 'CONFIG', 'WORK_DIR']),
    'slurm_test.sh': (4, ['PARTITION', 'JOB_NAME', 'CONFIG', 'CHECKPOINT']),
}
TORCHRUN_VARS = ['CUDA_VISIBLE_DEVICES', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT']
SLURM_VARS = ['GPUS', 'GPUS_PER_NODE', 'GRES', 'CPUS_PER_TASK', 'SRUN_ARGS', 'SIGNAL_LEAD',
              'REQUEUE', 'MASTER_PORT', 'OMP_NUM_THREADS']


def launch(script, *args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(['bash', os.path.join(ROOT, 'tools', script), *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('script', sorted(LAUNCHERS))
def test_help_prints_arguments_and_environment(script):
    out = launch(script, '--help')
    assert out.returncode == 0, out.stderr
    _, names = LAUNCHERS[script]
    variables = SLURM_VARS if script.startswith('slurm') else TORCHRUN_VARS
    for word in [f'tools/{script}', *names, *variables]:
        assert word in out.stdout, f'{script} --help does not mention {word}'
    assert 'unbound variable' not in out.stderr


@pytest.mark.parametrize('script', sorted(LAUNCHERS))
def test_missing_arguments_print_usage_and_fail(script):
    minimum, names = LAUNCHERS[script]
    for given in range(minimum):
        out = launch(script, *['x'] * given)
        assert out.returncode == 2, (script, given, out.stderr)
        assert f'expected at least {minimum} arguments, got {given}' in out.stderr
        assert 'usage:' in out.stderr and names[0] in out.stderr
        assert 'unbound variable' not in out.stderr


def test_launch_helper_usage():
    out = launch('_launch.sh', '--help')
    assert out.returncode == 0 and 'torchrun GPUS TOOL.py' in out.stdout
    assert all(v in out.stdout for v in TORCHRUN_VARS + SLURM_VARS)
    for args in [(), ('bogus',), ('torchrun', '2'), ('slurm', 'p', 'j')]:
        out = launch('_launch.sh', *args)
        assert out.returncode == 2 and 'usage: tools/_launch.sh' in out.stderr, args


@pytest.fixture
def cfg(tmp_path):
    """An existing config path (the launchers check it before starting anything)."""
    path = tmp_path / 'cfg.py'
    path.write_text('')
    return str(path)


def test_missing_config_fails_before_torchrun_or_srun(tmp_path):
    # the stand-ins only print, so that any launch would show in stdout
    env = dict(PYTHON=fake_python(tmp_path), PATH=f'{tmp_path}:{os.environ["PATH"]}')
    (tmp_path / 'srun').write_text('#!/usr/bin/env bash\necho srun ran\n')
    (tmp_path / 'srun').chmod(0o755)
    for script, args in [('dist_train.sh', ['no/such.py', '2']),
                         ('dist_test.sh', ['no/such.py', 'ckpt.pth', '2']),
                         ('slurm_train.sh', ['part', 'job', 'no/such.py']),
                         ('slurm_test.sh', ['part', 'job', 'no/such.py', 'ckpt.pth'])]:
        out = launch(script, *args, env=env)
        assert out.returncode == 2, (script, out.stderr)
        assert out.stderr == 'error: config file not found: no/such.py\n', script
        assert out.stdout == '', script                   # neither torchrun nor srun ran


def test_bad_gpu_count_is_named(cfg):
    out = launch('dist_train.sh', cfg, 'eight')
    assert out.returncode == 2 and "GPUS must be a positive integer, got 'eight'" in out.stderr
    out = launch('dist_train.sh', cfg, '2', env=dict(NODE_RANK='first'))
    assert out.returncode == 2 and "NODE_RANK must be an integer, got 'first'" in out.stderr


def test_slurm_without_srun_says_so(tmp_path, cfg):
    # a PATH with bash but no srun
    (tmp_path / 'bin').mkdir()
    for tool in ('bash', 'dirname'):
        os.symlink(subprocess.check_output(['which', tool], text=True).strip(),
                   tmp_path / 'bin' / tool)
    for script, args in [('slurm_train.sh', ['part', 'job', cfg]),
                         ('slurm_test.sh', ['part', 'job', cfg, 'ckpt.pth'])]:
        out = launch(script, *args, env=dict(PATH=str(tmp_path / 'bin')))
        assert out.returncode == 127
        assert 'srun not found' in out.stderr and 'dist_train.sh' in out.stderr
        assert 'exec: srun' not in out.stderr


def fake_python(tmp_path):
    """An interpreter stand-in that prints the arguments it was given, one per line."""
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    return str(fake)


def test_torchrun_arguments(tmp_path, cfg):
    env = dict(PYTHON=fake_python(tmp_path), NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.1',
               PORT='29511')
    out = launch('dist_train.sh', cfg, '4', '--amp', env=env)
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    assert args == [os.path.join(ROOT, 'tools', '_torchrun.py'), '--nnodes=2', '--node_rank=1',
                    '--master_addr=10.0.0.1', '--master_port=29511', '--nproc_per_node=4',
                    os.path.join(ROOT, 'tools', 'train.py'), cfg, '--amp',
                    '--launcher', 'pytorch']
    ckpt = tmp_path / 'ckpt.pth'
    ckpt.write_text('')
    out = launch('dist_test.sh', cfg, str(ckpt), '2', env=dict(PYTHON=env['PYTHON']))
    args = out.stdout.splitlines()
    assert args[1:6] == ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
                         '--master_port=29500', '--nproc_per_node=2']
    assert args[6:] == [os.path.join(ROOT, 'tools', 'test.py'), cfg, str(ckpt),
                        '--launcher', 'pytorch']


def fake_srun(tmp_path):
    """An srun stand-in that prints its arguments, one per line, and an interpreter that does
    the same: the environment for slurm_*.sh."""
    (tmp_path / 'srun').write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    (tmp_path / 'srun').chmod(0o755)
    return dict(PATH=f'{tmp_path}:{os.environ["PATH"]}', PYTHON=fake_python(tmp_path))


def test_slurm_multi_node_arguments(tmp_path, cfg):
    # Two nodes of eight GPUs: the test cluster (tests/slurm) has one node and no GPU, so the
    # composition of a multi-node GPU launch is shown with a stand-in srun.
    env = {**fake_srun(tmp_path), 'GPUS': '16', 'GPUS_PER_NODE': '8', 'CPUS_PER_TASK': '4',
           'SRUN_ARGS': '--time=1:00:00'}
    py, train = env['PYTHON'], os.path.join(ROOT, 'tools', 'train.py')
    out = launch('slurm_train.sh', 'part', 'job', cfg, 'work', '--amp', env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        '-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
        '--cpus-per-task=4', '--kill-on-bad-exit=1', '--signal=USR1@120', '--time=1:00:00',
        py, '-u', train, cfg, '--work-dir', 'work', '--amp', '--launcher', 'slurm']
    # a typed GPU, another signal lead, none
    out = launch('slurm_train.sh', 'part', 'job', cfg, env={**env, 'GRES': 'gpu:a100:8',
                                                            'SIGNAL_LEAD': '300'})
    assert out.stdout.splitlines()[3:4] == ['--gres=gpu:a100:8']
    assert '--signal=USR1@300' in out.stdout.splitlines()
    out = launch('slurm_train.sh', 'part', 'job', cfg, env={**env, 'SIGNAL_LEAD': '0'})
    assert out.returncode == 0 and '--signal' not in out.stdout
    # a requeued job resumes when its first run left a checkpoint; a command that already
    # resumes is left as it is
    restarted = {**env, 'SLURM_RESTART_COUNT': '2', 'SLURM_JOB_ID': '42'}
    work = str(tmp_path / 'w')
    out = launch('slurm_train.sh', 'p', 'j', cfg, work, '--amp', env=restarted)
    assert out.stdout.splitlines()[-6:] == [cfg, '--work-dir', work, '--amp', '--launcher',
                                            'slurm']     # nothing saved yet: a fresh start
    os.makedirs(work)
    open(os.path.join(work, 'last_checkpoint'), 'w').close()
    out = launch('slurm_train.sh', 'p', 'j', cfg, work, '--amp', env=restarted)
    assert out.stdout.splitlines()[-7:] == [cfg, '--work-dir', work, '--resume', '--amp',
                                            '--launcher', 'slurm']
    out = launch('slurm_train.sh', 'p', 'j', cfg, '--resume', 'x.pth', env=restarted)
    assert out.stdout.splitlines().count('--resume') == 1


def test_slurm_train_input_errors(tmp_path, cfg):
    env = fake_srun(tmp_path)
    out = launch('slurm_train.sh', 'p', 'j', cfg, env={**env, 'SIGNAL_LEAD': 'soon'})
    assert out.returncode == 2 and out.stdout == ''
    assert "SIGNAL_LEAD must be a number of seconds, got 'soon'" in out.stderr
    out = launch('slurm_train.sh', 'p', 'j', cfg, env={**env, 'REQUEUE': '1'})
    assert out.returncode == 2 and out.stdout == ''
    assert 'REQUEUE=1 requeues the sbatch job' in out.stderr
    # inside a job srun cannot ask for the signal (it would be ignored): sbatch must
    out = launch('slurm_train.sh', 'p', 'j', cfg, env={**env, 'SLURM_JOB_ID': '42',
                                                      'SIGNAL_LEAD': '90'})
    assert out.returncode == 2 and out.stdout == ''
    assert 'submit the job with sbatch --signal=USR1@90 and leave SIGNAL_LEAD unset' in out.stderr


def test_torchrun_launcher_forwards_preemption_signals_to_the_ranks(tmp_path, cfg):
    """A stand-in torchrun with one Python rank: the rank records the signal and exits 75;
    torchrun, like the real one, reports a failed rank with status 1."""
    ready, got = tmp_path / 'ready', tmp_path / 'got'
    rank = (f"import pathlib, signal, sys, time\n"
            f"def stop(signum, frame):\n"
            f"    pathlib.Path({str(got)!r}).write_text(signal.Signals(signum).name)\n"
            f"    sys.exit(75)\n"
            f"signal.signal(signal.SIGUSR1, stop)\n"
            f"signal.signal(signal.SIGTERM, stop)\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            f"while True:\n    time.sleep(0.05)\n")
    (tmp_path / 'rank.py').write_text(rank)
    fake = tmp_path / 'python'
    fake.write_text(f"#!/usr/bin/env bash\n{sys.executable} {tmp_path / 'rank.py'} &\n"
                    "wait $! || exit 1\n")
    fake.chmod(0o755)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), cfg, '1'],
                                cwd=ROOT, env={**os.environ, 'PYTHON': str(fake)},
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 75, (sig, proc.stderr.read())
        assert got.read_text() == sig.name
        got.unlink()


def launcher_default(variable: str) -> int:
    """The default of ``variable`` in tools/_launch.sh's Slurm launch (``${VARIABLE:-N}``)."""
    text = open(os.path.join(ROOT, 'tools', '_launch.sh')).read()
    defaults = set(re.findall(r'\$\{%s:-(\d+)\}' % variable, text))
    assert len(defaults) == 1, f'{variable} has the defaults {defaults} in tools/_launch.sh'
    return int(defaults.pop())


def test_shipped_configs_load_data_within_the_cpus_slurm_reserves():
    # each task gets CPUS_PER_TASK cores: the loader workers and the main process fit in them
    cpus = launcher_default('CPUS_PER_TASK')
    configs = [c for c in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
               if '_base_' not in c]
    assert len(configs) > 20
    for path in configs:
        cfg = Config.fromfile(path)
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(loader):
                workers = cfg[loader].get('num_workers', 0)
                assert workers + 1 <= cpus, f'{path}: {loader}.num_workers={workers}'
