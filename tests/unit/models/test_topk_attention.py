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
from mixedae.models.layers.topk_attention import (Blocks, default_blocks, homologous_precision,
                                                  hr_acc_chance, keep_from_bits,
                                                  topk_attention, topk_attention_reference,
                                                  topk_keep, triton_backward, triton_forward,
                                                  triton_unsupported)
from mixedae.models.layers import topk_attention as topk_module

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason='triton is not installed (CPU-only torch)')

#: rtol of kernel vs reference; atol is the same times the largest reference magnitude (>= 1).
TOLERANCES = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}


def loop_topk_attention(q, k, v, topk, labels, num_prefix):
    """Top-K attention restated one query at a time in float64: sort the row's logits, keep every
    key >= the K-th largest, softmax over the kept keys only, weighted sum of their values; and
    hr_acc: over patch queries (index >= num_prefix), the kept patch keys other than the query
    itself, the fraction with the query's label."""
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
                if i >= num_prefix:
                    counted = [j for j in kept if j >= num_prefix and j != i]
                    kept_pairs += len(counted)
                    same_pairs += sum(int(labels[t, i] == labels[t, j]) for j in counted)
    return torch.stack(rows).view(t_, h_, n, hd), same_pairs / kept_pairs


def qkv(t, h, n, hd, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, h, n, hd, generator=g).to(dtype).requires_grad_() for _ in range(3)]


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


#: T = 1, H = 1: two class tokens (labels 0, 1), then six patches labelled 0 0 0 1 1 1; the
#: class-token rows keep every key, patch query -> kept keys as below.
HAND_LABELS = torch.tensor([[0, 1, 0, 0, 0, 1, 1, 1]])
HAND_KEPT = {2: [2, 0, 3, 5], 3: [3, 4], 4: [6], 5: [5, 1], 6: [7], 7: [2]}


def hand_keep():
    keep = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    keep[0, 0, :2] = True
    for query, keys in HAND_KEPT.items():
        keep[0, 0, query, keys] = True
    return keep


def test_homologous_precision_counts_only_other_patch_keys():
    """By hand: class-token rows are not counted whatever they keep; query 2 (label 0) keeps
    itself, class token 0, patches 3 (0) and 5 (1): counts 3 and 5, one same; query 3 (0)
    keeps itself and 4 (0): one of one; query 5 (1) keeps itself and class token 1: nothing
    counted; queries 4, 6, 7 (0, 1, 1) keep 6, 7, 2 (1, 1, 0): one of three. hr_acc = 3 / 6
    (counting every kept pair, own keys and class tokens included, would give 16 / 27)."""
    precision = homologous_precision(hand_keep(), HAND_LABELS, num_prefix=2)
    assert precision.dtype == torch.float32 and precision.dim() == 0
    assert precision.item() == pytest.approx(3 / 6)
    everything = (HAND_LABELS.unsqueeze(-1) == HAND_LABELS.unsqueeze(-2)) & hand_keep()[0]
    assert (everything.sum() / hand_keep().sum()).item() == pytest.approx(16 / 27)
    # num_prefix=0: the class tokens count as patches (rows 0, 1: 3 + 3 of 7 + 7 other keys);
    # own keys are still left out
    assert homologous_precision(hand_keep(), HAND_LABELS, num_prefix=0).item() == pytest.approx(
        (6 + 2 + 1 + 0 + 1 + 1 + 0) / (14 + 3 + 1 + 1 + 1 + 1 + 1))
    alone = torch.eye(8, dtype=torch.bool).view(1, 1, 8, 8)     # every query keeps only itself
    assert torch.isnan(homologous_precision(alone, HAND_LABELS, num_prefix=2))
    assert torch.isnan(homologous_precision(hand_keep(), HAND_LABELS, num_prefix=8))  # no patch


@pytest.mark.parametrize('call,match', [
    (dict(num_prefix=9), r'num_prefix=9 must be in \[0, N=8\]'),
    (dict(num_prefix=-1), 'num_prefix=-1'),
    (dict(labels=torch.zeros(1, 7, dtype=torch.long)), 'labels T x N'),
    (dict(keep=torch.ones(1, 8, 8, dtype=torch.bool)), 'keep must be T x H x N x N'),
    (dict(keep=torch.ones(1, 1, 7, 8, dtype=torch.bool)), 'keep must be T x H x N x N'),
])
def test_homologous_precision_rejects_bad_input(call, match):
    args = dict(keep=hand_keep(), labels=HAND_LABELS, num_prefix=2)
    args.update(call)
    with pytest.raises(ValueError, match=match):
        homologous_precision(**args)


def hand_qkv():
    """q, k (1 x 1 x 8 x 16) whose logits q.k / 4 are 1 on the hand-built kept pairs and 0
    elsewhere: with K = 1 each row keeps exactly its kept keys (all tied at the largest)."""
    q = torch.zeros(1, 1, 8, 16)
    q[0, 0, :, :8] = torch.eye(8)
    k = torch.zeros(1, 1, 8, 16)
    k[0, 0, :, :8] = 4 * hand_keep()[0, 0].T.float()              # q_i . k_j = 4 keep[i, j]
    return q, k, torch.randn(1, 1, 8, 16)


def test_reference_hr_acc_on_hand_built_logits():
    q, k, v = hand_qkv()
    assert torch.equal(reference_keep(q, k, 1), hand_keep())
    _, precision = topk_attention_reference(q, k, v, 1, HAND_LABELS, num_prefix=2)
    assert precision.item() == pytest.approx(3 / 6)


@needs_triton
def test_kernel_hr_acc_on_hand_built_logits():
    q, k, v = hand_qkv()
    _, _, words = triton_forward(q, k, v, 1)
    assert torch.equal(keep_from_bits(words, 8).view(1, 1, 8, 8), hand_keep())
    _, precision = topk_attention(q, k, v, 1, HAND_LABELS, impl='triton', num_prefix=2)
    assert precision.item() == pytest.approx(3 / 6)


def test_keep_from_bits_reads_bit_j_of_word_w_as_key_32w_plus_j():
    words = torch.tensor([[[0b1011, 0], [0, -2 ** 31], [1, 1]]], dtype=torch.int32)  # 1 x 3 x 2
    keep = keep_from_bits(words, 64)
    assert keep.shape == (1, 3, 64)
    assert keep[0, 0].nonzero().flatten().tolist() == [0, 1, 3]
    assert keep[0, 1].nonzero().flatten().tolist() == [63]                         # sign bit
    assert keep_from_bits(words, 40).shape == (1, 3, 40)
    assert keep[0, 2].nonzero().flatten().tolist() == [0, 32]


@pytest.mark.parametrize('n,g,chance', [(16, 4, 3 / 15), (196, 4, 48 / 195), (8, 1, 1.),
                                         (2, 2, 0.), (2, 1, 1.)])
def test_hr_acc_chance(n, g, chance):
    assert hr_acc_chance(n, g) == pytest.approx(chance)


def test_hr_acc_chance_is_the_mean_over_random_selections():
    """Keep random keys (K = 5 of N' = 4 + 16 tokens) with balanced labels: the statistic's
    mean over many draws is (N/G - 1) / (N - 1)."""
    g = torch.Generator().manual_seed(0)
    t, h, n, groups = 64, 4, 16, 4
    labels = torch.cat([torch.arange(groups).expand(t, groups),
                        torch.rand(t, n, generator=g).argsort(1) % groups], dim=1)
    keep = topk_keep(torch.rand(t, h, n + groups, n + groups, generator=g), 5)
    assert homologous_precision(keep, labels, groups).item() == pytest.approx(
        hr_acc_chance(n, groups), abs=0.02)


@pytest.mark.parametrize('n,g', [(16, 3), (1, 1), (16, 0)])
def test_hr_acc_chance_rejects_bad_input(n, g):
    with pytest.raises(ValueError, match=f'N={n}, G={g}'):
        hr_acc_chance(n, g)


@pytest.mark.parametrize('topk', [1, 3, 9])
def test_reference_matches_loop_restatement(topk):
    q, k, v = qkv(1, 2, 9, 4, torch.float64, seed=topk)
    labels = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 0, 1]])
    expected, expected_precision = loop_topk_attention(q, k, v, topk, labels, num_prefix=2)
    out, precision = topk_attention_reference(q.float(), k.float(), v.float(), topk, labels,
                                              num_prefix=2)
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


#: (dtype, N, hd, K): the production shape (ViT-B at G = 4: N' = 200, hd 64, K = 50; 4 query
#: blocks of 64 in the forward, 4 key blocks of 64 in the backward) in fp32 and bf16, N' in
#: 257..512 (keys padded to 512, 32-row forward blocks), head dims 32, 80 (padded to 128) and
#: 128, K = N.
CASES = [(torch.float32, 200, 64, 50), (torch.bfloat16, 200, 64, 50),
         (torch.float32, 300, 80, 75), (torch.float16, 68, 32, 68), (torch.float32, 20, 128, 7)]


def check_kernel(q, k, v, topk, labels, grad, blocks=None, num_prefix=0):
    """Kernel vs reference: output, dq/dk/dv (kernel backward with ``blocks``), keep bits and,
    given labels, hr_acc."""
    dtype = q.dtype
    t, h, n, _ = q.shape
    ref_out, ref_precision = topk_attention_reference(q, k, v, topk, labels,
                                                      num_prefix=num_prefix)
    with torch.no_grad():
        out, lse, words = triton_forward(q, k, v, topk, blocks)
        got = triton_backward(q, k, v, out, grad, lse, words, blocks)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref_out, dtype)
    for name, g, w in zip('qkv', got, torch.autograd.grad(ref_out, (q, k, v), grad)):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype)
    keep = reference_keep(q, k, topk)
    assert torch.equal(keep_from_bits(words, n).view(t, h, n, n), keep)
    if labels is not None:
        with torch.no_grad():
            _, precision = topk_attention(q, k, v, topk, labels, impl='triton',
                                          num_prefix=num_prefix)
        assert torch.equal(precision, ref_precision)
    return keep


def upstream_grad(t, h, n, hd, dtype, seed=1):
    """A non-contiguous gradient, laid out as merge_heads' backward hands it over."""
    g = torch.randn(t, n, h, hd, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return g.transpose(1, 2)


@needs_triton
@pytest.mark.parametrize('dtype,n,hd,topk', CASES,
                         ids=[f'{str(d)[6:]}-N{n}-hd{hd}-K{k}' for d, n, hd, k in CASES])
def test_kernel_matches_reference(dtype, n, hd, topk):
    q, k, v = qkv(1, 2, n, hd, dtype, seed=n + hd)
    labels = torch.randint(0, 4, (1, n), generator=torch.Generator().manual_seed(n))
    grad = upstream_grad(1, 2, n, hd, dtype)
    assert not grad.is_contiguous()
    keep = check_kernel(q, k, v, topk, labels, grad, num_prefix=4)
    assert (keep.sum(-1) == topk).all()                # no ties in random data: exactly K kept


@needs_triton
def test_topk_attention_autograd_runs_the_kernel():
    """The public function (custom op + registered autograd) agrees with the reference."""
    q, k, v = qkv(2, 2, 37, 16, torch.float32, seed=5)
    labels = torch.randint(0, 3, (2, 37), generator=torch.Generator().manual_seed(5))
    out, precision = topk_attention(q, k, v, 6, labels, impl='triton', num_prefix=3)
    ref_out, ref_precision = topk_attention_reference(q, k, v, 6, labels, num_prefix=3)
    assert_close(out, ref_out, torch.float32)
    assert precision.dtype == torch.float32 and not precision.requires_grad
    assert torch.equal(precision, ref_precision)
    grad = upstream_grad(2, 2, 37, 16, torch.float32)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad),
                         torch.autograd.grad(ref_out, (q, k, v), grad)):
        assert_close(got, want, torch.float32)


@needs_triton
def test_custom_ops_pass_opcheck_and_compile_into_one_graph():
    """Fake implementations and autograd registration agree with the kernels (opcheck), and
    torch.compile(fullgraph=True) traces topk_attention's forward and backward."""
    q, k, v = qkv(1, 2, 20, 16, torch.float32, seed=6)
    labels = torch.randint(0, 3, (1, 20), generator=torch.Generator().manual_seed(6))
    torch.library.opcheck(torch.ops.mixedae.topk_attention_fwd, (q, k, v, 5))
    with torch.no_grad():                                 # the backward has no backward
        out, lse, words = triton_forward(q, k, v, 5)
        torch.library.opcheck(torch.ops.mixedae.topk_attention_bwd,
                              (q, k, v, out, torch.randn_like(out), lse, words))
    compiled = torch.compile(lambda *a: topk_attention(*a, impl='triton', num_prefix=2),
                             fullgraph=True, backend='aot_eager')
    got, precision = compiled(q, k, v, 5, labels)
    ref_out, ref_precision = topk_attention_reference(q, k, v, 5, labels, num_prefix=2)
    assert_close(got, ref_out, torch.float32)
    assert torch.equal(precision, ref_precision)
    grad = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, (q, k, v), grad),
                    torch.autograd.grad(ref_out, (q, k, v), grad)):
        assert_close(g, w, torch.float32)


@needs_triton
def test_atomic_dq_and_other_blocks_match_the_reference():
    """The benchmark's alternatives: 16-row forward blocks, 32-key backward blocks, atomic dQ."""
    q, k, v = qkv(1, 2, 100, 64, torch.float32, seed=7)
    check_kernel(q, k, v, 25, None, upstream_grad(1, 2, 100, 64, torch.float32),
                 Blocks(fwd_m=16, bwd_m=16, bwd_n=32, bwd_warps=2, atomic_dq=True))


@needs_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
def test_ties_at_the_kth_logit_are_kept_by_both_paths(dtype):
    """Integer-valued q and k (exact in every dtype) and duplicated keys: many logits equal the
    K-th largest exactly; both paths keep all of them, so rows keep more than K keys."""
    g = torch.Generator().manual_seed(3)
    n, hd, topk = 100, 16, 25
    q = torch.randint(-1, 2, (1, 2, n, hd), generator=g).float()
    k = torch.randint(-1, 2, (1, 2, n, hd), generator=g).float()
    k[..., 50:, :] = k[..., :50, :]                        # duplicate keys: equal logits
    v = torch.randn(1, 2, n, hd, generator=g)
    q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
    labels = torch.randint(0, 4, (1, n), generator=g)
    keep = check_kernel(q, k, v, topk, labels, upstream_grad(1, 2, n, hd, dtype))
    counts = keep.sum(-1)
    assert (counts >= topk).all() and (counts > topk).float().mean() > 0.5


@needs_triton
@pytest.mark.parametrize('positive,topk,kept', [(10, 20, 40), (0, 15, 30)],
                         ids=['positives-and-zeros', 'K-positive-zeros'])
def test_negative_zero_logits_tie_with_positive_zero(positive, topk, kept):
    """30 keys per row have logit exactly 0: 15 are -0.0 (a negative denormal dot product
    rounded to zero by the 1/8 scale), 15 +0.0; ``positive`` keys are positive, the rest
    negative. The K-th largest logit is 0 and all 30 zero keys must be kept, whatever the sign
    of their zero. In the second case exactly K keys are +0.0 and none positive: a kernel that
    ordered -0.0 below +0.0 would keep only the 15 +0.0 keys (it keeps exactly K), the rule 30."""
    n, hd = 100, 64
    g = torch.Generator().manual_seed(4)
    q = torch.zeros(1, 1, n, hd)
    q[..., 0] = 2. ** -70
    q[..., 1] = torch.rand(n, generator=g) + 0.5
    k = torch.zeros(1, 1, n, hd)
    k[..., :positive, 1] = torch.rand(positive, generator=g) + 0.5      # positive logits
    k[..., 10:25, 0] = -2. ** -77                         # dot -2**-147, times 1/8 -> -0.0
    k[..., 25:40, 0] = 2. ** -77                          # -> +0.0
    k[..., positive:10, 1] = -torch.rand(10 - positive, generator=g) - 0.5
    k[..., 40:, 1] = -torch.rand(60, generator=g) - 0.5   # negative logits
    logits = (q @ k.transpose(-2, -1)) * hd ** -0.5
    assert torch.signbit(logits[..., 10:25]).all() and (logits[..., 10:40] == 0).all()
    assert ((logits > 0).sum(-1) == positive).all()
    v = torch.randn(1, 1, n, hd, generator=g)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    keep = check_kernel(q, k, v, topk, None, upstream_grad(1, 1, n, hd, torch.float32))
    assert (keep.sum(-1) == kept).all()
    assert keep[..., 10:40].all()


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
    torch.manual_seed(0)
    out, _ = topk_attention(q, q, q, 2, **kwargs)          # 'auto' falls back to the reference
    torch.manual_seed(0)                                   # (the same dropout draw)
    assert torch.equal(out, topk_attention_reference(q, q, q, 2, dropout_p=kwargs.get(
        'dropout_p', 0.))[0])


@needs_triton
@pytest.mark.parametrize('blocks,match', [
    (Blocks(fwd_m=24, bwd_m=32, bwd_n=32, bwd_warps=4), 'fwd_m=24 must be a power of two'),
    (Blocks(fwd_m=64, bwd_m=8, bwd_n=32, bwd_warps=4), 'bwd_m=8 must be a power of two'),
    (Blocks(fwd_m=64, bwd_m=32, bwd_n=48, bwd_warps=4), 'bwd_n=48 must be a multiple of 32'),
    (Blocks(fwd_m=64, bwd_m=32, bwd_n=64, bwd_warps=4), 'dividing 32'),   # N=20: 32 keys
])
def test_bad_launch_shapes_raise(blocks, match):
    q = torch.randn(1, 1, 20, 16)
    with pytest.raises(ValueError, match=match):
        triton_forward(q, q, q, 2, blocks)


def test_reference_checks_labels_keeps_the_dtype_and_applies_dropout_p():
    q = torch.randn(1, 2, 20, 16)
    with pytest.raises(ValueError, match=r'^labels must be T x N = \(1, 20\), got \(1, 19\)$'):
        topk_attention_reference(q, q, q, 3, torch.zeros(1, 19, dtype=torch.long))
    half = q.to(torch.bfloat16)
    assert topk_attention_reference(half, half, half, 3)[0].dtype == torch.bfloat16
    # K = 1 and v = 1: each output is 1 / (1 - p) where the kept weight survives dropout, else 0
    torch.manual_seed(0)
    out, _ = topk_attention_reference(q, q, torch.ones_like(q), 1, dropout_p=0.1)
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.9)


@pytest.mark.parametrize('args,match', [
    (dict(topk=0), r'topk=0 must be in \[1, N=20\]'),
    (dict(topk=21), r'topk=21'),
    (dict(labels=torch.zeros(2, 19, dtype=torch.long)), 'labels must be T x N'),
    (dict(labels=torch.zeros(2, 20, dtype=torch.long), num_prefix=21),
     r'num_prefix=21 must be in \[0, N=20\]'),
    (dict(impl='fast'), "impl='fast'"),
    (dict(k=torch.randn(2, 2, 21, 16)),
     r'^q, k, v must all be T x H x N x hd, got \(2, 2, 20, 16\), \(2, 2, 21, 16\), '
     r'\(2, 2, 20, 16\)$'),
    (dict(q=torch.randn(2, 20, 16), k=torch.randn(2, 20, 16), v=torch.randn(2, 20, 16)),
     'q, k, v must all be T x H x N x hd'),
    (dict(v=torch.randn(2, 2, 20, 16, dtype=torch.float16)), 'share a dtype'),
])
def test_bad_arguments_raise(args, match):
    q = torch.randn(2, 2, 20, 16)
    call = dict(q=q, k=q, v=q, topk=3)
    call.update(args)
    with pytest.raises(ValueError, match=match):
        topk_attention(**call)


@pytest.mark.parametrize('n,hd,blocks', [
    (200, 64, Blocks(fwd_m=64, bwd_m=32, bwd_n=64, bwd_warps=4)),   # ViT-B at G = 4
    (256, 65, Blocks(fwd_m=64, bwd_m=32, bwd_n=64, bwd_warps=8)),
    (257, 128, Blocks(fwd_m=32, bwd_m=32, bwd_n=64, bwd_warps=8)),  # 512 padded keys
    (20, 16, Blocks(fwd_m=64, bwd_m=32, bwd_n=32, bwd_warps=4)),    # 32 padded keys
])
def test_default_blocks_are_the_documented_choice(n, hd, blocks):
    """64-row forward blocks up to 256 padded keys, 32 rows at 512; FlashAttention-2's 32 x 64
    backward tile (keys capped by the padded count), 4 warps up to head dim 64, else 8."""
    assert default_blocks(n, hd) == blocks


@needs_triton
@pytest.mark.parametrize('shape', [(1, 1, 512, 16), (1, 1, 20, 128), (1, 1, 20, 16)],
                         ids=['N-512', 'hd-128', 'hd-16'])
def test_the_kernel_takes_the_boundary_shapes(shape):
    assert triton_unsupported(torch.zeros(shape)) is None


@needs_triton
def test_why_the_kernel_cannot_run(monkeypatch):
    q = torch.zeros(1, 1, 20, 16)
    monkeypatch.setattr(topk_module, 'INTERPRETED', False)
    assert triton_unsupported(q) == ('cpu tensors need the interpreter: TRITON_INTERPRET=1 '
                                     'before triton is imported')
    monkeypatch.setattr(topk_module, 'triton', None)
    assert triton_unsupported(q) == 'triton is not importable'


@needs_triton
@pytest.mark.parametrize('impl,dtype,kernel', [
    ('triton', torch.float32, True), ('auto', torch.float32, False),
    ('auto', torch.float16, False), ('reference', torch.float32, False)])
def test_dispatch_runs_the_kernel_only_when_asked_or_on_cuda(monkeypatch, impl, dtype, kernel):
    """On CPU tensors 'auto' runs the reference even for fp16 (the kernel needs CUDA there);
    'triton' runs the kernel."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return triton_forward(*args, **kwargs)
    monkeypatch.setattr(topk_module, 'triton_forward', spy)
    q, k, v = qkv(1, 2, 20, 16, dtype)
    with torch.no_grad():
        topk_attention(q, k, v, 3, impl=impl)
    assert calls == ([q.shape] if kernel else [])


def strided(layout, g):
    """A 1 x 2 x 20 x 16 tensor whose head dim does not have unit stride: every second channel
    of a wider tensor, the keys innermost, or the heads innermost."""
    if layout == 'every-second-channel':
        return torch.randn(1, 2, 20, 32, generator=g)[..., ::2]
    if layout == 'keys-innermost':
        return torch.randn(1, 2, 16, 20, generator=g).transpose(-1, -2)
    return torch.randn(1, 20, 16, 2, generator=g).permute(0, 3, 1, 2)        # heads innermost


@needs_triton
@pytest.mark.parametrize('layout', ['every-second-channel', 'keys-innermost', 'heads-innermost'])
def test_kernel_reads_q_k_v_without_unit_stride_on_the_head_dim(layout):
    """Copied before the kernel, which assumes unit stride on the head dim (and only there)."""
    g = torch.Generator().manual_seed(9)
    q, k, v = (strided(layout, g) for _ in range(3))
    assert q.shape == (1, 2, 20, 16) and q.stride(-1) != 1
    with torch.no_grad():
        out, _ = topk_attention(q, k, v, 4, impl='triton')
    assert_close(out, topk_attention_reference(q, k, v, 4)[0], torch.float32)


@needs_triton
def test_the_kernel_path_checks_labels_before_running():
    q = torch.randn(2, 2, 20, 16)
    with pytest.raises(ValueError, match=r'^labels must be T x N = \(2, 20\), got \(2, 19\)$'):
        topk_attention(q, q, q, 3, torch.zeros(2, 19, dtype=torch.long), impl='triton')


#: compiles both kernels (and the atomic-dQ backward) for an H100 (sm_90, bf16, ViT-B at G=4:
#: N'=200, hd=64) without a GPU, through ptxas: catches what the interpreter cannot (type and
#: layout errors of the real compiler). A subprocess, because the test session imported triton
#: in interpreter mode.
COMPILE_SCRIPT = r'''
import importlib.util, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
spec = importlib.util.spec_from_file_location('topk_attention', sys.argv[1])  # skip mmengine & co
ta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ta)
n, hd = 200, 64
b = ta.default_blocks(n, hd)
common = dict(BLOCK_D=hd, PRECISION='tf32', UPCAST=False)
for kernel, consts, num_warps in [
        (ta._fwd_kernel, dict(BLOCK_M=b.fwd_m, BLOCK_N=ta.padded_keys(n),
                              **common), b.fwd_m // 16),
        (ta._bwd_kernel, dict(ATOMIC=False, N=n, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, **common),
         b.bwd_warps),
        (ta._bwd_kernel, dict(ATOMIC=True, N=n, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, **common),
         b.bwd_warps)]:
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = 'constexpr'
        elif name in ('Q', 'K', 'V', 'O', 'DO', 'DK', 'DV'):
            sig[name] = '*bf16'
        elif name in ('LSE', 'DELTA', 'DQP'):
            sig[name] = '*fp32'
        elif name == 'MASK':
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
    assert names == ['_fwd_kernel', '_bwd_kernel', '_bwd_kernel'], result.stdout
