"""Top-K (homologous) attention: the reference against a loop restatement, the Triton kernel
(run by Triton's CPU interpreter, see tests/conftest.py) against the reference, ties, dispatch."""
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch

from support import ROOT
from mixedae.models.layers.topk_attention import (_triton_forward, topk_attention,
                                                  topk_attention_reference, topk_keep)

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason='triton is not installed (CPU-only torch)')

#: rtol of kernel vs reference; atol is the same times the largest reference magnitude (>= 1).
TOLERANCES = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}


def loop_topk_attention(q, k, v, topk, labels):
    """Top-K attention restated one query at a time in float64: sort the row's logits, keep every
    key >= the K-th largest, softmax over the kept keys only, weighted sum of their values."""
    t_, h_, n, hd = q.shape
    rows, kept_pairs, same_pairs = [], 0, 0
    for t in range(t_):
        for h in range(h_):
            for i in range(n):
                scores = [(q[t, h, i] * k[t, h, j]).sum() / math.sqrt(hd) for j in range(n)]
                kth = sorted((s.item() for s in scores), reverse=True)[topk - 1]
                kept = [j for j in range(n) if scores[j].item() >= kth]
                top = max(scores[j].item() for j in kept)
                weights = [torch.exp(scores[j] - top) for j in kept]
                total = sum(weights)
                rows.append(sum(w / total * v[t, h, j] for w, j in zip(weights, kept)))
                kept_pairs += len(kept)
                same_pairs += sum(int(labels[t, i] == labels[t, j]) for j in kept)
    return torch.stack(rows).view(t_, h_, n, hd), same_pairs / kept_pairs


def qkv(t, h, n, hd, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, h, n, hd, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def decode_mask(words, shape):
    """(T*H) x N x W int32 words -> T x H x N x N bool keep mask (bit j of word w = key 32w+j)."""
    bits = (words.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten(-2)[..., :shape[2]].bool().view(*shape[:3], shape[2])


def reference_keep(q, k, topk):
    logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
    return topk_keep(logits, topk)


def assert_close(actual, expected, dtype):
    tol = TOLERANCES[dtype]
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol * max(scale, 1.),
                               rtol=tol)


def test_topk_keep_keeps_ties():
    logits = torch.tensor([[3., 1., 2., 2., 0.], [0., -0., 1., 1., 1.]])
    assert topk_keep(logits, 3).tolist() == [[True, False, True, True, False],
                                             [False, False, True, True, True]]
    assert topk_keep(logits, 4).tolist()[1] == [True, True, True, True, True]  # -0.0 ties 0.0


@pytest.mark.parametrize('topk', [1, 3, 9])
def test_reference_matches_loop_restatement(topk):
    q, k, v = qkv(1, 2, 9, 4, torch.float64, seed=topk)
    labels = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 0, 1]])
    expected, expected_precision = loop_topk_attention(q, k, v, topk, labels)
    out, precision = topk_attention_reference(q.float(), k.float(), v.float(), topk, labels)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=1e-5)
    assert precision.dtype == torch.float32 and precision.dim() == 0
    assert not precision.requires_grad
    assert precision.item() == pytest.approx(expected_precision, abs=1e-7)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad((out.double() * grad).sum(), (q, k, v))
    want = torch.autograd.grad((expected * grad).sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_reference_masks_before_the_softmax():
    """With K < N the output is a convex combination of the kept values only."""
    q, k, _ = qkv(1, 1, 6, 6, torch.float32)
    v = torch.eye(6).view(1, 1, 6, 6)                          # out[i, j] = weight of key j
    out, _ = topk_attention_reference(q, k, v, 2)
    keep = reference_keep(q, k, 2)
    assert torch.allclose(out.sum(-1), torch.ones(1, 1, 6))
    assert (out[~keep] == 0).all() and (out[keep] > 0).all()


def test_reference_logits_stay_fp32_under_autocast():
    q, k, v = qkv(2, 2, 12, 16, torch.float32)
    labels = torch.randint(0, 3, (2, 12))
    expected = topk_attention_reference(q, k, v, 4, labels)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = topk_attention_reference(q, k, v, 4, labels)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


# (N, hd, K): one key block of 32, 64 and 128 (padded), head dims 16..64 and a padded 48.
SHAPES = [(20, 16, 1), (37, 32, 5), (68, 64, 68), (20, 48, 7)]


@needs_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16', 'bf16'])
@pytest.mark.parametrize('n,hd,topk', SHAPES, ids=[f'N{n}-hd{d}-K{t}' for n, d, t in SHAPES])
def test_kernel_matches_reference(dtype, n, hd, topk):
    q, k, v = qkv(2, 2, n, hd, dtype, seed=n + hd)
    labels = torch.randint(0, 3, (2, n), generator=torch.Generator().manual_seed(n))
    out, precision = topk_attention(q, k, v, topk, labels, impl='triton')
    ref_out, ref_precision = topk_attention_reference(q, k, v, topk, labels)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref_out, dtype)
    assert precision.dtype == torch.float32 and not precision.requires_grad
    assert precision.item() == pytest.approx(ref_precision.item(), abs=1e-6)

    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref_out, (q, k, v), grad)
    for name, g, w in zip('qkv', got, want):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype)

    with torch.no_grad():
        _, _, words, kept, same = _triton_forward(q, k, v, topk, labels)
    keep = reference_keep(q, k, topk)
    assert torch.equal(decode_mask(words, q.shape), keep)
    assert torch.equal(kept.view(2, 2, n), keep.sum(-1).int())
    same_ref = keep & (labels[:, None, :, None] == labels[:, None, None, :])
    assert torch.equal(same.view(2, 2, n), same_ref.sum(-1).int())


@needs_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16', 'bf16'])
def test_ties_at_the_kth_logit_are_kept_by_both_paths(dtype):
    """Integer-valued q and k (exact in every dtype) and duplicated keys: many logits equal the
    K-th largest exactly; both paths keep all of them, so rows keep more than K keys."""
    g = torch.Generator().manual_seed(3)
    n, hd, topk = 37, 16, 4
    q = torch.randint(-1, 2, (2, 2, n, hd), generator=g).float()
    k = torch.randint(-1, 2, (2, 2, n, hd), generator=g).float()
    k[..., 10:20, :] = k[..., :10, :]                        # duplicate keys: equal logits
    v = torch.randn(2, 2, n, hd, generator=g)
    q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
    out, _ = topk_attention(q, k, v, topk, impl='triton')
    ref_out, _ = topk_attention_reference(q, k, v, topk)
    assert_close(out, ref_out, dtype)
    with torch.no_grad():
        words = _triton_forward(q, k, v, topk, None)[2]
    keep = reference_keep(q, k, topk)
    assert torch.equal(decode_mask(words, q.shape), keep)
    counts = keep.sum(-1)
    assert (counts >= topk).all() and (counts > topk).float().mean() > 0.5
    grad = torch.randn(q.shape, generator=g).to(dtype)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad),
                         torch.autograd.grad(ref_out, (q, k, v), grad)):
        assert_close(got, want, dtype)


@needs_triton
def test_kernel_reads_strided_qkv():
    """q, k, v as timm's attention slices them out of one qkv projection (non-contiguous)."""
    t, n, h, hd = 2, 37, 2, 32
    x = torch.randn(t, n, 3 * h * hd, requires_grad=True)
    q, k, v = x.view(t, n, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    out, precision = topk_attention(q, k, v, 6, impl='triton')
    ref_out, ref_precision = topk_attention_reference(q, k, v, 6)
    assert precision is None and ref_precision is None
    assert_close(out, ref_out, torch.float32)
    grad = torch.randn_like(out)
    got, = torch.autograd.grad(out, x, grad)
    want, = torch.autograd.grad(ref_out, x, grad)
    assert_close(got, want, torch.float32)


def test_auto_runs_the_reference_on_cpu():
    q, k, v = qkv(2, 2, 20, 16, torch.float32)
    labels = torch.randint(0, 2, (2, 20))
    out, precision = topk_attention(q, k, v, 3, labels)
    ref_out, ref_precision = topk_attention_reference(q, k, v, 3, labels)
    assert torch.equal(out, ref_out) and torch.equal(precision, ref_precision)


@needs_triton
@pytest.mark.parametrize('shape,dtype,kwargs,match', [
    ((1, 1, 20, 8), torch.float32, {}, 'head dim 8'),
    ((1, 1, 600, 16), torch.float32, {}, 'N=600'),
    ((1, 1, 20, 16), torch.float64, {}, 'dtype torch.float64'),
    ((1, 1, 20, 16), torch.float32, dict(dropout_p=0.1), 'dropout_p=0.1'),
])
def test_triton_refuses_unsupported_inputs(shape, dtype, kwargs, match):
    q = torch.randn(shape, dtype=dtype)
    with pytest.raises(ValueError, match=match):
        topk_attention(q, q, q, 2, impl='triton', **kwargs)
    out, _ = topk_attention(q, q, q, 2, **kwargs)          # 'auto' falls back to the reference
    assert out.shape == shape


@pytest.mark.parametrize('args,match', [
    (dict(topk=0), r'topk=0 must be in \[1, N=20\]'),
    (dict(topk=21), r'topk=21'),
    (dict(labels=torch.zeros(2, 19, dtype=torch.long)), 'labels must be T x N'),
    (dict(impl='fast'), "impl='fast'"),
    (dict(v=torch.randn(2, 2, 20, 16, dtype=torch.float16)), 'share a dtype'),
])
def test_bad_arguments_raise(args, match):
    q = torch.randn(2, 2, 20, 16)
    call = dict(q=q, k=q, v=q, topk=3)
    call.update(args)
    with pytest.raises(ValueError, match=match):
        topk_attention(**call)


#: compiles the three kernels for an H100 (sm_90, bf16, ViT-B at G=4: N'=200, hd=64) without a
#: GPU, through ptxas: catches what the interpreter cannot (type and layout errors of the real
#: compiler). A subprocess, because the test session imported triton in interpreter mode.
COMPILE_SCRIPT = r'''
import importlib.util, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
spec = importlib.util.spec_from_file_location('topk_attention', sys.argv[1])  # skip mmengine & co
ta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ta)
n, hd = 200, 64
bm, bn, bd, warps = ta._blocks(n, hd)
bm2, bn2, warps2 = ta._dkdv_blocks(n, hd)
common = dict(BLOCK_D=bd, PRECISION='tf32', UPCAST=False)
for kernel, consts, num_warps in [
        (ta._fwd_kernel, dict(HAS_LABELS=True, BLOCK_M=bm, BLOCK_N=bn, **common), warps),
        (ta._bwd_dq_kernel, dict(BLOCK_M=bm, BLOCK_N=bn, **common), warps),
        (ta._bwd_dkdv_kernel, dict(BLOCK_M=bm2, BLOCK_N=bn2, **common), warps2)]:
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = 'constexpr'
        elif name in ('Q', 'K', 'V', 'O', 'DO', 'DQ', 'DK', 'DV'):
            sig[name] = '*bf16'
        elif name in ('LSE', 'DELTA'):
            sig[name] = '*fp32'
        elif name in ('MASK', 'LAB', 'KEPT', 'SAME'):
            sig[name] = '*i32'
        else:
            sig[name] = 'fp32' if name == 'scale' else 'i32'
    compiled = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget('cuda', 90, 32),
                              options=dict(num_warps=num_warps))
    print(kernel.__name__, len(compiled.asm['cubin']), 'bytes of sm_90 cubin')
'''


@needs_triton
@pytest.mark.slow
def test_kernels_compile_for_sm90():
    env = {key: value for key, value in os.environ.items() if key != 'TRITON_INTERPRET'}
    module = os.path.join(ROOT, 'mixedae', 'models', 'layers', 'topk_attention.py')
    result = subprocess.run([sys.executable, '-c', COMPILE_SCRIPT, module], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ['_fwd_kernel', '_bwd_dq_kernel', '_bwd_dkdv_kernel'], result.stdout
