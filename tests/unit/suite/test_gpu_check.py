"""The GPU smoke check (mixedae/suite/gpu_check.py, tools/gpu_check.py), on CPU: refusal without
CUDA, the check table, the kernel-vs-reference comparison (with stand-in kernels), the benchmark
rows' labels on hand-made numbers, the JSON report and the whole run at tiny scale."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from support import REPO, ROOT, load_tool
from mixedae.suite import gpu_check
from mixedae.utils.errors import DeviceUnavailableError

KERNEL_MODULE = 'mixedae.models.layers.topk_attention'


def loop_topk_attention(q, k, v, topk, labels=None, dropout_p=0., impl='reference'):
    """Top-K attention restated per query: keep keys with logit >= the K-th largest (ties kept),
    softmax over them; precision = kept pairs with equal labels / kept pairs."""
    logits = q.float() @ k.float().transpose(-2, -1) * q.shape[-1] ** -0.5
    kth = logits.topk(topk, dim=-1).values[..., -1:]
    keep = logits >= kth
    attn = logits.masked_fill(~keep, float('-inf')).softmax(-1)
    out = (attn @ v.float()).to(q.dtype)
    if labels is None:
        return out, None
    same = (labels[:, None, :, None] == labels[:, None, None, :]) & keep
    return out, (same.sum() / keep.sum()).float().detach()


def without_mask(q, k, v, topk, labels=None, dropout_p=0., impl='reference'):
    """A wrong 'kernel': plain softmax attention over every key."""
    if impl == 'reference':
        return loop_topk_attention(q, k, v, topk, labels)
    return loop_topk_attention(q, k, v, k.shape[-2], labels)


@pytest.fixture
def fake_kernel(monkeypatch):
    """Install a stand-in ``topk_attention`` module; returns a setter for its function."""
    module = types.ModuleType(KERNEL_MODULE)
    monkeypatch.setitem(sys.modules, KERNEL_MODULE, module)
    monkeypatch.setenv('TRITON_INTERPRET', '1')

    def use(fn):
        module.topk_attention = fn
    return use


def test_refuses_to_run_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    out = tmp_path / 'report.json'
    with pytest.raises(DeviceUnavailableError, match=r'no CUDA device.*--allow-cpu'):
        load_tool('gpu_check').main(['--out', str(out)])
    assert not out.exists()


def test_run_check_statuses(capsys):
    def skip():
        raise gpu_check.Skip('no ops')

    def broken():
        raise RuntimeError('boom\nsecond line')

    assert gpu_check.run_check('a', lambda: 'fine') == dict(check='a', status='ok', detail='fine')
    assert gpu_check.run_check('b', skip)['status'] == 'skipped'
    row = gpu_check.run_check('c', broken)
    assert row == dict(check='c', status='FAIL', detail='RuntimeError: boom')
    assert 'Traceback' in capsys.readouterr().err


def test_attention_inputs_give_exact_logits():
    q, k, _, labels, _ = gpu_check.attention_inputs((2, 3, 20, 16, 5), torch.bfloat16,
                                                     torch.device('cpu'))
    assert set(q.unique().tolist()) <= {-1., 0., 1.} and labels.shape == (2, 20)
    logits = q.float() @ k.float().transpose(-2, -1)
    assert torch.equal(logits, logits.round())


def test_kernel_check_without_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, KERNEL_MODULE, None)  # import fails
    with pytest.raises(gpu_check.NotAvailable, match='topk_attention does not import'):
        gpu_check.kernel_check((2, 2, 20, 16, 6), torch.device('cpu'))


def test_kernel_check_needs_the_interpreter_on_cpu(fake_kernel, monkeypatch):
    fake_kernel(loop_topk_attention)
    monkeypatch.delenv('TRITON_INTERPRET')
    with pytest.raises(gpu_check.Skip, match='TRITON_INTERPRET=1'):
        gpu_check.kernel_check((2, 2, 20, 16, 6), torch.device('cpu'))


def test_kernel_check_agrees_and_catches_a_wrong_kernel(fake_kernel):
    fake_kernel(loop_topk_attention)
    detail = gpu_check.kernel_check((2, 2, 20, 16, 6), torch.device('cpu'))
    assert detail.startswith('T2 H2 N20 hd16 K6') and 'float32 max|diff| 0.0e+00' in detail
    fake_kernel(without_mask)
    with pytest.raises(AssertionError, match='torch.float32 out'):
        gpu_check.kernel_check((2, 2, 20, 16, 6), torch.device('cpu'))


def test_mmcv_ops_row_names_the_ops_path():
    from mixedae.utils.mmcv_ops import compiled_mmcv_ops
    detail = gpu_check.mmcv_ops_check(torch.device('cpu'))
    path = 'compiled mmcv ops' if compiled_mmcv_ops() else 'torchvision-backed mmcv._ext'
    assert detail.startswith(path) and detail.endswith('run on cpu')


def timed(median, spread=0., repeats=3, **fields):
    """A benchmark result with ``repeats`` times around ``median`` spread ``spread``."""
    low, high = median * (1 - spread / 2), median * (1 + spread / 2)
    times = [low, median, high][:repeats] if repeats <= 3 else [median] * repeats
    return dict(step_s=median, times=times, **fields)


def test_pretrain_rows_are_labelled_against_the_target():
    mae = timed(1.0, 0.02, method='mae')
    rows = gpu_check.pretrain_rows([mae, timed(1.2, 0.02, method='naivemix'),
                                    timed(1.04, 0.02, method='mixedae')], 256)
    assert [(r['check'], r['status']) for r in rows] == [
        ('speed: naivemix vs MAE, batch 256', 'ok'),            # no target
        ('speed: mixedae vs MAE, batch 256', 'ok')]             # 1.04 <= 1.05, spread 2 % < 4 %
    assert rows[1]['detail'] == '1.04x MAE step time (median), target <= 1.05x at batch 256'
    statuses = [gpu_check.pretrain_rows([mae, mixedae], 256)[0]['status'] for mixedae in (
        timed(1.10, 0.02, method='mixedae'),                    # over the target
        timed(1.05, 0.20, method='mixedae'),                    # spread 20 % > 5 %
        timed(1.30, 0.40, method='mixedae'),                    # over, and spread 40 % > 30 %
        timed(1.01, 0.0, repeats=2, method='mixedae'))]         # 2 repeats
    assert statuses == ['below target', 'noisy', 'below target (noisy)', 'noisy']


def test_backbone_rows_check_time_and_memory():
    def pair(protocol, time_ratio, memory_ratio, spread=0.02):
        shape = dict(protocol=protocol, input='512x512', batch=16)
        return [timed(0.1, spread, model='timm', peak_mib=1000., **shape),
                timed(0.1 * time_ratio, spread, model='config', peak_mib=1000. * memory_ratio,
                      **shape)]

    rows = gpu_check.backbone_rows(pair('ade20k', 1.2, 1.4) + pair('coco_a', 1.2, 1.6)
                                   + pair('vitdet', 1.4, 1.0) + pair('x', 1.02, 1.0, 0.1))
    assert [r['status'] for r in rows] == ['ok', 'below target', 'below target', 'noisy']
    assert rows[0] == dict(
        check='speed: ade20k backbone vs timm, 512x512, batch 16', status='ok',
        detail='1.20x time, 1.40x memory of timm (targets <= 1.3x, 1.5x)')
    assert 'x backbone vs timm 1.02x is noisy' in rows[3]['detail']


def test_report_json_round_trip_and_summary(tmp_path):
    rows = [dict(check='device', status='ok', detail='cpu'),
            dict(check='speed: a', status='below target (noisy)', detail='d'),
            dict(check='b', status='FAIL', detail='RuntimeError: x')]
    report = dict(device='cpu', torch=torch.__version__, cuda=None, scale='tiny', rows=rows,
                  tables=['title\n\n| t |'], benchmarks=dict(pretrain=[timed(0.5)]),
                  seconds=12.)
    path = tmp_path / 'sub' / 'check.json'
    gpu_check.write_report(str(path), report)
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ['check.json']   # no temporary left
    assert gpu_check.summary(report).endswith(
        '| t |\n\ngpu_check: 1 failed: b; 1 below target, 1 noisy; 12 s')


def test_end_to_end_config_points_at_the_generated_data():
    cfg = REPO.load('coco_a-tiny')
    views = dict(ade20k='/d/ade', coco='/d/coco')
    gpu_check.point_at_data(cfg, 'coco_a', views, '/w', 8)
    assert cfg.train_dataloader.dataset.data_root == cfg.test_dataloader.dataset.data_root \
        == '/d/coco/'
    assert cfg.test_evaluator.ann_file == '/d/coco/annotations/instances_val2017.json'
    assert cfg.val_dataloader is None and cfg.val_evaluator is None and cfg.val_cfg is None
    assert (cfg.train_cfg.max_iters, cfg.work_dir) == (8, '/w')


@pytest.mark.slow
def test_whole_check_on_cpu_at_tiny_scale(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, TRITON_INTERPRET='1')
    out_file = tmp_path / 'gpu_check.json'
    out = subprocess.run(['bash', 'tools/gpu_check.sh', '--allow-cpu', '--scale', 'tiny',
                          '--out', str(out_file)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # stdout is the result alone: the check table first, the Runner's logs went to stderr
    assert out.stdout.startswith('| check | status | detail |\n')
    report = json.loads(out_file.read_text())
    rows = {r['check']: r for r in report['rows']}
    table = {line.split(' | ')[0][2:]: line.split(' | ')[1]
             for line in out.stdout.split('\n\n')[0].splitlines()[2:]}
    assert table == {check: r['status'] for check, r in rows.items()}
    names = ('UperNet ADE20K', 'Mask R-CNN protocol A', 'Mask R-CNN ViTDet')
    steps = [f'train step: {m} pretraining (tiny)' for m in ('mae', 'naivemix', 'mixedae')]
    steps += [f'train step: {name} (tiny)' for name in names]
    ends = [f'train + test: {name} (tiny, generated data)' for name in names[:2]]
    speed = [f'speed: {m} vs MAE, batch 8' for m in ('naivemix', 'mixedae')]
    speed += [f'speed: {p} backbone vs timm, 64x64, batch 2'
              for p in ('ade20k', 'coco_a', 'vitdet')]
    kernel = 'top-K attention kernel vs reference'
    assert list(rows) == ['device', 'mmcv ops', *steps, *ends, kernel, 'benchmark: pretraining',
                          *speed[:2], 'benchmark: backbones', *speed[2:]]
    ok = ['device', 'mmcv ops', *steps, *ends, 'benchmark: pretraining', 'benchmark: backbones']
    assert {c: rows[c]['status'] for c in ok} == dict.fromkeys(ok, 'ok')
    assert rows[kernel]['status'] in ('ok', 'not available')
    assert 'mIoU ' in rows[ends[0]]['detail']
    assert 'coco/bbox_mAP ' in rows[ends[1]]['detail'] and 'coco/segm_mAP ' in rows[ends[1]]['detail']
    # each comparison row is labelled by its own numbers, noisy ones say why
    results = report['benchmarks']
    mae = results['pretrain'][0]
    for r, row in zip(results['pretrain'][1:], speed[:2]):
        assert rows[row]['status'] == gpu_check.target_status(
            r['method'] == 'mixedae' and r['step_s'] / mae['step_s'] > gpu_check.PRETRAIN_TARGET,
            gpu_check.ratio_warning('', r['step_s'] / mae['step_s'], r, mae))
    assert [r['check'] for r in gpu_check.backbone_rows(results['backbones'])] == speed[2:]
    assert all(len(r['times']) == 3 for r in results['pretrain'] + results['backbones'])
    for row in speed:
        assert ('noisy' in rows[row]['status']) == ('is noisy' in rows[row]['detail'])
    assert report['device'] == rows['device']['detail'] and report['cuda'] == torch.version.cuda
    assert report['torch'] == torch.__version__ and report['scale'] == 'tiny'
    assert len(report['tables']) == 2 and '| vitdet | mixedae.ViT | 64x64 |' in out.stdout
    assert 'gpu_check: 0 failed' in out.stdout
