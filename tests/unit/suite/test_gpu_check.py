"""The GPU smoke check (mixedae/suite/gpu_check.py, tools/gpu_check.py), on CPU: refusal without CUDA, the check table,
the kernel-vs-reference comparison (with stand-in kernels) and the whole run at tiny scale."""
import os
import subprocess
import sys
import types

import pytest
import torch

from support import ROOT, load_tool
from mixedae.suite import gpu_check

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


def test_refuses_to_run_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert load_tool('gpu_check').main([]) == 2
    err = capsys.readouterr().err
    assert 'no CUDA device' in err and '--allow-cpu' in err


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


def test_mmcv_ops_present_here():
    assert gpu_check.mmcv_ops_problem(torch.device('cpu')) == dict(seg=None, det=None)


@pytest.mark.slow
def test_whole_check_on_cpu_at_tiny_scale():
    env = dict(os.environ, PYTHON=sys.executable, TRITON_INTERPRET='1')
    out = subprocess.run(['bash', 'tools/gpu_check.sh', '--allow-cpu', '--scale', 'tiny'],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {line.split(' | ')[0][2:]: line.split(' | ')[1]
            for line in out.stdout.splitlines() if line.startswith('| ')}
    for check in ('mae', 'naivemix', 'mixedae'):
        assert rows[f'train step: {check} pretraining (tiny)'] == 'ok'
    for check in ('UperNet ADE20K', 'Mask R-CNN protocol A', 'Mask R-CNN ViTDet'):
        assert rows[f'train step: {check} (tiny)'] == 'ok'
    assert rows['top-K attention kernel vs reference'] in ('ok', 'not available')
    assert rows['benchmark: pretraining'] == rows['benchmark: backbones'] == 'ok'
    assert '| vitdet | mixedae.ViT | 64x64 |' in out.stdout
    assert 'gpu_check: 0 failed' in out.stdout
