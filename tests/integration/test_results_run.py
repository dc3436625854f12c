"""results.py run on a tiny matrix of the tiny ADE20K config, for real: a failing run does not
stop the next, the summary names both, and a run with a checkpoint resumes instead of
starting again (the preempted path with a stand-in shell: tests/unit/suite/test_runner.py)."""
import json
import os
import subprocess
import sys

import pytest

from support import ROOT, free_port

pytestmark = pytest.mark.slow   # tools/results.py and the trainings in subprocesses

ADE = 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
SHORT = ['train_cfg.max_iters=6', 'train_cfg.val_interval=6', 'default_hooks.logger.interval=1',
         'default_hooks.checkpoint.interval=3']


def results_run(matrix):
    out = subprocess.run([sys.executable, 'tools/results.py', 'run', str(matrix)], cwd=ROOT,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES='',
                                  PORT=str(free_port())),
                         capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr


def test_a_failed_run_is_reported_the_next_runs_and_a_rerun_resumes(tmp_path, ade_root):
    options = ' '.join([*SHORT, *(f'{s}_dataloader.dataset.data_root={ade_root}'
                                  for s in ('train', 'val', 'test'))])
    runs = [dict(method=m, task='ade20k', config=ADE, work_dir=str(tmp_path / m),
                 metrics=str(tmp_path / f'{m}.json'), test_args=f'--cfg-options {options}',
                 train_args=f'--cfg-options {options}' + (
                     ' optim_wrapper.optimizer.lr=-1' if m == 'bad' else ''))
            for m in ('bad', 'good')]
    matrix = tmp_path / 'matrix.json'
    matrix.write_text(json.dumps(dict(gpus=1, runs=runs)))
    status, out, err = results_run(matrix)
    summary = out[out.rindex('summary:\n'):].splitlines()
    assert status == 1, err[-3000:]
    assert summary[1] == f'bad/ade20k: failed, training exit 1, log {tmp_path}/bad/results_run.log'
    assert summary[2].startswith('good/ade20k: done, ADE20K mIoU '), summary
    assert 'Invalid learning rate' in (tmp_path / 'bad' / 'results_run.log').read_text()
    metrics = json.loads((tmp_path / 'good.json').read_text())
    # the metrics gone, the run resumes from its checkpoint: no iteration is trained again
    (tmp_path / 'good.json').unlink()
    log = tmp_path / 'good' / 'results_run.log'
    before = log.read_text()
    status, out, err = results_run(matrix)
    again = log.read_text()[len(before):]
    assert f'good/ade20k: resuming from {tmp_path}/good/last_checkpoint' in out
    assert '--resume' in again.splitlines()[0] and 'Iter(train)' not in again, again[-3000:]
    assert json.loads((tmp_path / 'good.json').read_text()) == metrics
    assert out.splitlines()[-1].startswith('good/ade20k: done, ADE20K mIoU')
