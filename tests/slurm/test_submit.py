"""results.py submit / status on the test cluster: the README's tiny matrix as Slurm jobs,
preempted mid-run, followed with status to the end and collected into the same table as
results.py run gives; re-running submit adds no job; the refusals that need a cluster (an
unknown partition)."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from support import ROOT, free_port, load_tool
from mixedae.datasets.synthetic import write_dataset

ADE = 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
PRETRAIN = 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'
#: short runs: 24 iterations (about 0.6 s each with two CPU tasks), a checkpoint every 3,
#: validation at the end, a log line each
SHORT = ['train_cfg.max_iters=24', 'train_cfg.val_interval=24',
         'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=3']


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """Generated data and the README's converted tiny MixedAE encoder (4 epochs of 1 batch)."""
    folder = tmp_path_factory.mktemp('quick')
    roots = write_dataset(str(folder / 'data'), num_train=16, num_val=4, size=(64, 80), seed=0,
                          views=('ade20k', 'pretrain'))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    for cmd in ([sys.executable, 'tools/train.py', PRETRAIN, '--work-dir', str(folder / 'pre'),
                 '--cfg-options', f'train_dataloader.dataset.data_root={roots["pretrain"]}'],
                [sys.executable, 'tools/convert_checkpoint.py', str(folder / 'pre/epoch_4.pth'),
                 str(folder / 'mixedae.pth'), '--src-format', 'mixedae']):
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    return folder, roots['ade20k']


def readme_matrix(folder, data_root, name):
    """The README's tiny matrix (one mixedae ADE20K run on 2 processes), its outputs under
    ``folder/name``, shortened to 6 iterations."""
    options = ' '.join([*SHORT, *(f'{s}_dataloader.dataset.data_root={data_root}'
                                  for s in ('train', 'val', 'test'))])
    out = folder / name
    matrix = {'gpus': 2, 'scale': 'tiny ViT, generated 64 px data',
              'runs': [{'method': 'mixedae', 'task': 'ade20k', 'config': ADE,
                        'checkpoint': str(folder / 'mixedae.pth'),
                        'work_dir': str(out / 'ade20k'), 'metrics': str(out / 'ade20k.json'),
                        'train_args': f'--cfg-options {options}',
                        'test_args': f'--cfg-options {options}'}]}
    out.mkdir()
    (out / 'matrix.json').write_text(json.dumps(matrix))
    return out / 'matrix.json'


@pytest.fixture
def on_cluster(slurm_cluster, monkeypatch):
    """The tool runs in this process, in the repository root, with the cluster's clients."""
    monkeypatch.chdir(ROOT)
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv('SIGNAL_LEAD', '60')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    for name in ('MASTER_PORT', 'PORT'):     # the jobs' and results.py run's rendezvous ports
        monkeypatch.setenv(name, str(free_port()))
    return slurm_cluster


def tool_lines(capsys, *argv):
    """Run results.py in this process; its status and stdout lines."""
    capsys.readouterr()
    status = load_tool('results').main(list(argv))
    return status, capsys.readouterr().out.splitlines()


def queued_jobs(cluster):
    return sorted(cluster.run(['squeue', '-h', '-o', '%i']).stdout.split())


def test_readme_matrix_submitted_followed_and_collected(on_cluster, quick, capsys, tmp_path):
    folder, data_root = quick
    matrix = str(readme_matrix(folder, data_root, 'slurm'))
    submit = ['submit', matrix, '--partition', on_cluster.partition, '--time', '10',
              '--cpus-per-task', '1', '--no-gres']
    assert tool_lines(capsys, 'status', matrix) == (0, ['mixedae/ade20k: not submitted'])
    status, lines = tool_lines(capsys, *submit)
    assert status == 0 and len(lines) == 1, lines
    found = re.fullmatch(r'mixedae/ade20k: submitted train job (\d+), test job (\d+)', lines[0])
    assert found, lines
    jobs = sorted(found.groups())
    assert queued_jobs(on_cluster) == jobs
    train = on_cluster.job(found.group(1))
    assert train['Requeue'] == '1' and train['TimeLimit'] == '00:10:00'
    assert on_cluster.job(found.group(2))['Dependency'] == f'afterok:{found.group(1)}(unfulfilled)'
    # submitting again while the jobs are queued adds none
    status, lines = tool_lines(capsys, *submit)
    assert status == 0 and 'already queued' in lines[0] and queued_jobs(on_cluster) == jobs
    # followed with status; once it has trained a few iterations, Slurm requeues the training
    # as a preemption does (scontrol requeue: SIGTERM to the job, which saves; requeued by
    # Slurm); it resumes from its last checkpoint
    seen, preempted, deadline = [], False, time.time() + 600
    while time.time() < deadline:
        status, lines = tool_lines(capsys, 'status', matrix)
        state = lines[0].split(': ', 1)[1].split(',')[0]
        if not seen or seen[-1] != state:
            seen.append(state)
        done = re.search(r'iteration (\d+)/24', lines[0])
        if not preempted and done and 4 <= int(done.group(1)) <= 18:
            on_cluster.run(['scontrol', 'requeue', found.group(1)])
            preempted = True
        if 'requeued 1 time' in lines[0] and seen[-1] != 'requeued':
            seen.append('requeued')
        if state in ('done', 'failed'):
            break
        time.sleep(1)
    logs = [folder / 'slurm/ade20k' / f'slurm_{step}.log' for step in ('train', 'test')]
    logs = ''.join(log.read_text()[-3000:] for log in logs if log.exists())
    assert seen[-1] == 'done', f'{seen}: {lines}\n{logs}'
    assert seen[0] in ('pending', 'running') and 'running' in seen, seen
    assert preempted and 'requeued' in seen, seen
    assert set(seen) <= {'pending', 'running', 'completing', 'requeued', 'done'}, seen
    assert on_cluster.job(found.group(1))['Restarts'] == '1'
    train_log = (folder / 'slurm/ade20k/slurm_train.log').read_text()
    resumed = re.search(r'resumed epoch: \d+, iter: (\d+)', train_log)
    assert resumed and int(resumed.group(1)) >= 3, train_log[-3000:]   # not from iteration 0
    assert re.fullmatch(r'mixedae/ade20k: done, ADE20K mIoU \d+\.\d\d', lines[0]), lines
    # done: submitting again submits nothing
    status, lines = tool_lines(capsys, *submit)
    assert lines[0].startswith('mixedae/ade20k: done, not submitted again') and \
        queued_jobs(on_cluster) == []
    # the same matrix run on this machine by results.py run: the same table
    local = str(readme_matrix(folder, data_root, 'local'))
    status, lines = tool_lines(capsys, 'run', local)
    assert status == 0 and lines[-1].startswith('mixedae/ade20k: done, ADE20K mIoU'), lines[-5:]
    tables = []
    for name, path in (('slurm', matrix), ('local', local)):
        assert tool_lines(capsys, 'collect', path, '--out', str(tmp_path / name))[0] == 0
        tables.append((tmp_path / name / 'results.md').read_text())
    assert tables[0] == tables[1]
    assert json.loads((folder / 'slurm/ade20k.json').read_text()) == \
        json.loads((folder / 'local/ade20k.json').read_text())


def test_an_unknown_partition_is_refused_before_anything_is_submitted(on_cluster, quick,
                                                                      capsys):
    folder, data_root = quick
    matrix = str(readme_matrix(folder, data_root, 'refused'))
    out = subprocess.run([sys.executable, 'tools/results.py', 'submit', matrix, '--partition',
                          'gpu-a100', '--time', '1'], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "error: --time 1 (60 s) is not longer than SIGNAL_LEAD (60 s): every job would be told "
        "to stop before it starts; give a longer --time or a smaller SIGNAL_LEAD",
        f"error: unknown partition 'gpu-a100': --partition must be one that sinfo lists "
        f"({on_cluster.partition})"]
    assert queued_jobs(on_cluster) == [] and not (folder / 'refused/ade20k').exists()


def test_a_transfer_run_waits_for_its_pretraining_job(on_cluster, quick, capsys):
    """A matrix "pretrain" entry is one job (training, then conversion); the run that loads
    its encoder waits for it (afterok) and then loads what it wrote."""
    folder, data_root = quick
    out = folder / 'chain'
    matrix = json.loads(readme_matrix(folder, data_root, 'chain').read_text())
    matrix['pretrain'] = [{
        'name': 'mixedae', 'config': PRETRAIN, 'work_dir': str(out / 'pretrain'),
        'checkpoint': str(out / 'mixedae.pth'), 'src_format': 'mixedae',
        'train_args': '--cfg-options train_dataloader.batch_size=4 '    # 2 batches per task
                      f'train_dataloader.dataset.data_root={folder / "data" / "pretrain"}'}]
    run = matrix['runs'][0]
    run['checkpoint'] = str(out / 'mixedae.pth')
    run['train_args'] = run['train_args'].replace('max_iters=24', 'max_iters=6').replace(
        'val_interval=24', 'val_interval=6')
    path = out / 'matrix.json'
    path.write_text(json.dumps(matrix))
    status, lines = tool_lines(capsys, 'submit', str(path), '--partition', on_cluster.partition,
                               '--cpus-per-task', '1', '--no-gres')
    assert status == 0 and lines[0].startswith('pretrain/mixedae: submitted train job '), lines
    pre = lines[0].rsplit(' ', 1)[1]
    assert lines[1].endswith(f'(after job {pre})'), lines
    train = re.search(r'train job (\d+)', lines[1]).group(1)
    assert on_cluster.job(train)['Dependency'].startswith(f'afterok:{pre}')
    deadline = time.time() + 600
    while time.time() < deadline:
        status, lines = tool_lines(capsys, 'status', str(path))
        if all(line.split(': ')[1].startswith(('done', 'failed')) for line in lines):
            break
        time.sleep(2)
    assert lines[0] == f'pretrain/mixedae: done, wrote {out}/mixedae.pth', lines
    assert re.fullmatch(r'mixedae/ade20k: done, ADE20K mIoU \d+\.\d\d', lines[1]), lines
    log = (out / 'ade20k' / 'slurm_train.log').read_text()
    assert f'loaded 52 tensors from {out}/mixedae.pth' in log
