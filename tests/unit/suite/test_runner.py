"""The one-node runner of a matrix (results.py run): resume, preempted and failed runs, the
summary, and the checks of every run's inputs before anything starts."""
import json
import os
import shlex

import pytest

from support import REPO, load_tool
from mixedae.suite.results import input_problems, load_matrix, run_commands
from mixedae.suite.runner import RUN_LOG, console_lines, exit_status, run_matrix
from mixedae.utils.errors import UserInputError

ADE = REPO.path('configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')


def write_matrix(tmp_path, runs, **top):
    path = tmp_path / 'matrix.json'
    path.write_text(json.dumps(dict(gpus=2, runs=runs, **top)))
    return load_matrix(str(path)), path


def tiny_run(tmp_path, method, data_root, **extra):
    return dict(method=method, task='ade20k', config=ADE, work_dir=str(tmp_path / method),
                metrics=str(tmp_path / f'{method}.json'),
                train_args='--cfg-options ' + ' '.join(
                    f'{s}_dataloader.dataset.data_root={data_root}'
                    for s in ('train', 'val', 'test')), **extra)


class FakeExecute:
    """Stands in for the shell: records each command and its log; a training returns the
    status given for its run (default 0), a test writes {'mIoU': 12.5} to its metrics file."""

    def __init__(self, train_status=None):
        self.train_status = train_status or {}
        self.calls = []

    def __call__(self, cmd, log):
        self.calls.append((cmd, log))
        words = shlex.split(cmd)
        if words[0] == 'tools/dist_train.sh':
            work_dir = words[words.index('--work-dir') + 1]
            return self.train_status.get(os.path.basename(work_dir), 0)
        if words[0] == 'tools/dist_test.sh':
            out = words[words.index('--out-metrics') + 1]
            with open(out, 'w') as f:
                json.dump({'mIoU': 12.5}, f)
        return 0


def test_runs_go_on_after_preempted_and_failed_ones_and_resume(tmp_path, ade_root):
    runs = [tiny_run(tmp_path, m, ade_root) for m in ('pre', 'bad', 'good', 'again', 'old')]
    (tmp_path / 'again').mkdir()
    (tmp_path / 'again' / 'last_checkpoint').write_text('x/iter_10.pth')
    (tmp_path / 'old.json').write_text(json.dumps({'mIoU': 30.0}))
    matrix, _ = write_matrix(tmp_path, runs)
    fake = FakeExecute({'pre': 75, 'bad': 1})
    outcomes = run_matrix(matrix, 2, fake)
    assert [o.line() for o in outcomes] == [
        f'pre/ade20k: preempted, exit 75; run again to resume from {tmp_path}/pre/last_checkpoint',
        f'bad/ade20k: failed, training exit 1, log {tmp_path}/bad/{RUN_LOG}',
        'good/ade20k: done, ADE20K mIoU 12.50',
        'again/ade20k: done, ADE20K mIoU 12.50',
        f'old/ade20k: skipped, {tmp_path}/old.json exists (ADE20K mIoU 30.00)',
    ]
    trains = [shlex.split(c) for c, _ in fake.calls if c.startswith('tools/dist_train.sh')]
    assert ['--resume' in t for t in trains] == [False, False, False, True]
    assert trains[3][:6] == ['tools/dist_train.sh', ADE, '2', '--work-dir',
                             str(tmp_path / 'again'), '--resume']
    tests = [c for c, _ in fake.calls if c.startswith('tools/dist_test.sh')]
    assert len(tests) == 2                      # no test after a stopped training
    assert exit_status(outcomes) == 1
    assert exit_status(outcomes[:1]) == 75 and exit_status(outcomes[2:]) == 0


def test_a_run_waits_for_its_pretraining(tmp_path, ade_root):
    pre = dict(name='mix', config=REPO.path(
        'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'),
        work_dir=str(tmp_path / 'mix'), checkpoint=str(tmp_path / 'mix.pth'),
        src_format='mixedae')
    runs = [tiny_run(tmp_path, 'a', ade_root, checkpoint=str(tmp_path / 'mix.pth')),
            tiny_run(tmp_path, 'b', ade_root)]
    matrix, _ = write_matrix(tmp_path, runs, pretrain=[pre])
    fake = FakeExecute({'mix': 1})
    lines = [o.line() for o in run_matrix(matrix, 2, fake)]
    assert lines[0] == f'pretrain/mix: failed, training exit 1, log {tmp_path}/mix/{RUN_LOG}'
    assert lines[1] == (f'a/ade20k: skipped, its encoder {tmp_path}/mix.pth comes from '
                        'pretrain/mix, which failed')
    assert lines[2] == 'b/ade20k: done, ADE20K mIoU 12.50'
    # a finished pretraining: the conversion follows it, the run loads what it wrote
    (tmp_path / 'b.json').unlink()
    fake = FakeExecute()
    run_matrix(matrix, 2, fake)
    assert fake.calls[1][0].startswith('.venv/bin/python tools/convert_checkpoint.py "$(cat '
                                       f'{tmp_path}/mix/last_checkpoint)" {tmp_path}/mix.pth '
                                       '--src-format mixedae')
    assert f'model.backbone.init_cfg.checkpoint={tmp_path}/mix.pth' in fake.calls[2][0]


def test_the_checkpoint_option_joins_the_runs_own_cfg_options(tmp_path, ade_root):
    run = tiny_run(tmp_path, 'a', ade_root, checkpoint='w.pth')
    run['train_args'] += ' --amp'
    matrix, _ = write_matrix(tmp_path, [run])
    train = shlex.split(run_commands(matrix['runs'][0], 2)[0])
    at = train.index('--cfg-options')
    assert train.count('--cfg-options') == 1 and '--amp' in train[:at]
    assert train[at + 1:] == [f'{s}_dataloader.dataset.data_root={ade_root}'
                              for s in ('train', 'val', 'test')] + [
        'model.backbone.init_cfg.type=Pretrained', 'model.backbone.init_cfg.checkpoint=w.pth']


def test_every_runs_inputs_are_checked_before_anything_runs(tmp_path, ade_root, capsys):
    runs = [tiny_run(tmp_path, 'ok', ade_root),
            dict(tiny_run(tmp_path, 'noconf', ade_root), config='configs/none.py'),
            tiny_run(tmp_path, 'nockpt', ade_root, checkpoint=str(tmp_path / 'absent.pth')),
            tiny_run(tmp_path, 'nodata', tmp_path / 'nodata')]
    matrix, path = write_matrix(tmp_path, runs)
    assert input_problems(matrix) == [
        'noconf/ade20k: config file not found: configs/none.py (fix the "config" path in the '
        'matrix)',
        f'nockpt/ade20k: checkpoint not found: {tmp_path}/absent.pth (convert the encoder with '
        'tools/convert_checkpoint.py, or add a "pretrain" entry that writes it)',
        f"nodata/ade20k: train_dataloader.dataset.data_root: folder not found: "
        f"'{tmp_path}/nodata' (fix the path in the config or with --cfg-options in the "
        "matrix's \"train_args\")",
    ]
    tool = load_tool('results')
    with pytest.raises(UserInputError) as err:
        tool.main(['run', str(path)])
    lines = f'error: {err.value}'.splitlines()
    assert len(lines) == 3 and all(line.startswith('error: ') for line in lines)
    assert not (tmp_path / 'ok').exists()       # nothing ran


def test_a_checkpoint_written_by_pretraining_need_not_exist_yet(tmp_path, ade_root):
    pre = dict(name='mix', config=ADE, work_dir=str(tmp_path / 'mix'),
               checkpoint=str(tmp_path / 'mix.pth'), src_format='mixedae',
               train_args=tiny_run(tmp_path, 'x', ade_root)['train_args'])
    matrix, _ = write_matrix(tmp_path, [tiny_run(tmp_path, 'a', ade_root,
                                                 checkpoint=str(tmp_path / 'mix.pth'))],
                             pretrain=[pre])
    assert input_problems(matrix) == []


@pytest.mark.parametrize('pretrain,message', [
    ([dict(name='a', config='c.py', work_dir='w')], r"pretrain\[0\] lacks \['checkpoint', "
                                                    r"'src_format'\]"),
    ([dict(name='a', config='c.py', work_dir='w', checkpoint='k', src_format='x')],
     r"pretrain\[0\].src_format 'x' not in"),
    ([dict(name='a', config='c.py', work_dir='w', checkpoint='k', src_format='mae', nodes=0)],
     r'pretrain\[0\].nodes must be a positive integer, got 0'),
    ([dict(name='a', config='c.py', work_dir='w', checkpoint='k', src_format='mae'),
      dict(name='b', config='c.py', work_dir='v', checkpoint='k', src_format='mae')],
     r"pretrain\[1\].checkpoint 'k' is also that of pretrain\[0\]"),
    ({'name': 'a'}, 'pretrain must be a list'),
])
def test_bad_pretrain_entries_are_named(tmp_path, pretrain, message):
    path = tmp_path / 'm.json'
    path.write_text(json.dumps(dict(runs=[], pretrain=pretrain)))
    with pytest.raises(ValueError, match=message):
        load_matrix(str(path))


def test_gpus_per_node_must_divide_gpus(tmp_path):
    path = tmp_path / 'm.json'
    path.write_text(json.dumps(dict(gpus=12, gpus_per_node=8, runs=[])))
    with pytest.raises(ValueError, match='gpus 12 is not a multiple of gpus_per_node 8'):
        load_matrix(str(path))


# a 2-rank training's console, shortened: the environment report, the config dump (interrupted
# by another rank's warning), the hook order, a metric table and the iteration lines
CONSOLE = '''\
12/07 19:32:58 - mmengine - INFO -
------------------------------------------------------------
System environment:
    sys.platform: linux
------------------------------------------------------------

12/07 19:32:58 - mmengine - INFO - Config:
auto_scale_lr = dict(base_batch_size=16, enable=False)
crop_size = (
    64,
/venv/mmseg/models/losses/cross_entropy_loss.py:250: UserWarning: Default avg_non_ignore
  warnings.warn(
12/07 19:32:59 - mmengine - INFO - Hooks will be executed in the following order:
before_run:
(VERY_HIGH   ) RuntimeInfoHook
 --------------------
12/07 19:33:01 - mmengine - INFO - Iter(train) [ 5/40]  eta: 0:00:07  loss: 0.2335
12/07 19:33:04 - mmengine - INFO - per class results:
12/07 19:33:04 - mmengine - INFO -
+----------+-------+-------+
|  Class   |  IoU  |  Acc  |
+----------+-------+-------+
12/07 19:33:04 - mmengine - INFO - Iter(val) [4/4]    aAcc: 31.7400  mIoU: 11.6600
Traceback (most recent call last):
RuntimeError: boom
12/07 19:33:05 - mmengine - INFO -
'''


def test_console_keeps_progress_metrics_warnings_and_errors_only():
    # MMEngine ends an empty message with the separator's space
    lines = CONSOLE.replace('INFO -\n', 'INFO - \n').splitlines(keepends=True)
    kept = list(console_lines(lines))
    assert ''.join(kept) == ''.join(lines[10:12] + lines[16:])
