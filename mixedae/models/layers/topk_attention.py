"""Homologous (top-K) attention: a fused Triton kernel and its PyTorch reference.

Each query keeps the keys whose logit ``s = (q . k) * hd**-0.5`` (computed in fp32 whatever the
input dtype) is >= the query's K-th largest logit, takes the softmax over the kept keys only and
multiplies by V. Ties at the K-th value are all kept, so a row may keep more than K keys; -0.0 and
+0.0 count as equal. Both paths implement exactly this rule.

Reference (``topk_attention_reference``): eager PyTorch on the explicit T x H x N x N fp32 logits
(``topk``, compare, masked softmax); it differentiates through autograd, runs on any device and
is the only path with attention dropout.

Kernel (``impl='triton'``): one program per (block of queries, batch x head) holds the fp32
logits of its queries against all N keys on chip (keys padded to a power of two >= 32, at most
512). Each row's K-th largest logit is found exactly by a 32-step bitwise search on the
order-preserving uint32 image of the fp32 logits (the largest threshold t with
count(image >= t) >= K is the K-th largest image), then the kept logits go through the softmax and
``@ V``. Per row the kernel stores the base-2 log-sum-exp (fp32), the keep mask as one bit per
(padded) key in int32 words and, given labels, the counts of kept keys and of kept keys with the
query's label, from which the ``precision`` statistic is summed: the backward saves q, k, v, the
output, O(N) floats per row and N^2 bits per head, never the N^2 probabilities. The backward reads
the stored mask bits (so it keeps exactly the forward's keys without relying on a bit-identical
recomputation of the logits), recomputes the probabilities from the log-sum-exp and follows the
flash-attention backward: a first kernel per query block computes delta = rowsum(dO * O) and dQ,
a second per key block loops over the query blocks to accumulate dK and dV on chip. No atomics,
so gradients are deterministic.

Dispatch (``impl='auto'``): the kernel on fp16/bf16 CUDA tensors when Triton imports, the shape
is supported (N <= 512, 16 <= head dim <= 128) and there is no dropout; the reference otherwise.
``impl='triton'`` also takes fp32 (exact IEEE products, no TF32), but its fp32 tiles do not fit in
registers (ptxas reports large spills on sm_90), so 'auto' leaves fp32 to the reference.
``impl='triton'`` on CPU tensors runs the same kernels in Triton's interpreter, which
needs ``TRITON_INTERPRET=1`` in the environment before triton is first imported (Triton reads it
when its own and these kernels are decorated); tests/conftest.py sets it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # CPU-only torch builds do not ship Triton; the reference still works
    triton = tl = InterpretedFunction = None

IMPLS = ('auto', 'triton', 'reference')
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
AUTO_DTYPES = (torch.float16, torch.bfloat16)  # fp32 kernel tiles spill registers, see above
MAX_TOKENS = 512
HEAD_DIMS = (16, 128)


def topk_keep(logits: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest logits along the last dim (ties at the k-th kept)."""
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits >= kth


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, topk: int, labels: Optional[Tensor]) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError('q, k, v must all be T x H x N x hd, got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f'q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}')
    n = q.shape[2]
    if not 1 <= topk <= n:
        raise ValueError(f'topk={topk} must be in [1, N={n}]')
    if labels is not None and labels.shape != (q.shape[0], n):
        raise ValueError(f'labels must be T x N = {(q.shape[0], n)}, got {tuple(labels.shape)}')


def _precision(same: Tensor, kept: Tensor) -> Tensor:
    """Fraction of kept (query, key) pairs with equal labels, a 0-dim fp32 tensor."""
    return (same.sum().double() / kept.sum().double()).float()


def topk_attention_reference(q: Tensor, k: Tensor, v: Tensor, topk: int,
                             labels: Optional[Tensor] = None,
                             dropout_p: float = 0.) -> Tuple[Tensor, Optional[Tensor]]:
    """Eager top-K attention; same contract as ``topk_attention``."""
    _check_inputs(q, k, v, topk, labels)
    with torch.autocast(q.device.type, enabled=False):  # fp32 logits even under autocast
        logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # T x H x N x N
        keep = topk_keep(logits, topk)
        attn = logits.masked_fill(~keep, float('-inf')).softmax(dim=-1)
        if dropout_p:
            attn = F.dropout(attn, p=dropout_p)
        out = (attn @ v.float()).to(q.dtype)
    precision = None
    if labels is not None:
        with torch.no_grad():
            same = keep & (labels.unsqueeze(-1) == labels.unsqueeze(-2)).unsqueeze(1)
            precision = _precision(same, keep)
    return out, precision


# ------------------------------------------------------------------------------------------------
# Triton kernels (interpreted when TRITON_INTERPRET=1 was set before triton was imported).
# Tensors are T x H x N x hd with unit stride on hd; ``bh`` indexes T x H; LSE, DELTA, KEPT and
# SAME are (T*H) x N; MASK is (T*H) x N x (BLOCK_N // 32) int32 words, bit j of word w = key 32w+j.
# ------------------------------------------------------------------------------------------------

def _jit(fn: Callable) -> Callable:
    return fn if triton is None else triton.jit(fn)


@_jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; UPCAST: fp32 operands (the interpreter cannot multiply bf16:
    the products of bf16 values are exact in fp32, so the result is the same up to summation
    order)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision='ieee')
    return tl.dot(a, b, input_precision=PRECISION)


@_jit
def _tile(P, b, h, s_b, s_h, s_n, idx, dims, ok):
    """Rows ``idx`` x ``dims`` of slice (b, h) of a T x H x N x hd tensor, 0 where not ``ok``."""
    return tl.load(P + b * s_b + h * s_h + idx[:, None] * s_n + dims[None, :], mask=ok, other=0.)


@_jit
def _unpack(words, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """BM x BN/32 int32 words -> BM x BN bool keep mask."""
    bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
    return tl.reshape(bits, (BLOCK_M, BLOCK_N)) != 0


@_jit
def _fwd_kernel(Q, K, V, O, LSE, MASK, LAB, KEPT, SAME,
                sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                H, N, HD, topk, scale,
                HAS_LABELS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    col_ok = cols < N
    rd_ok = row_ok[:, None] & (dims < HD)[None, :]
    cd_ok = col_ok[:, None] & (dims < HD)[None, :]
    q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, dims, rd_ok)                   # BM x BD
    k = _tile(K, b, h, sk_b, sk_h, sk_n, cols, dims, cd_ok)                   # BN x BD
    v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)                   # BN x BD
    s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale                        # BM x BN fp32

    # order-preserving uint32 image of s (-0.0 mapped onto +0.0, padded keys onto 0)
    bits = s.to(tl.uint32, bitcast=True)
    img = tl.where((bits >> 31) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    img = tl.where(img == 0x7FFFFFFF, 0x80000000, img)
    img = tl.where(col_ok[None, :], img, 0)
    # the K-th largest image, built from the most significant bit down
    thresh = tl.zeros([BLOCK_M], dtype=tl.uint32)
    for i in tl.static_range(32):
        cand = thresh | (1 << (31 - i))
        count = tl.sum((img >= cand[:, None]).to(tl.int32), axis=1)
        thresh = tl.where(count >= topk, cand, thresh)
    keep = (img >= thresh[:, None]) & col_ok[None, :]                          # BM x BN

    # s back from its image (holding only img through the search saves registers)
    bits = tl.where(img >= 0x80000000, img ^ 0x80000000, img ^ 0xFFFFFFFF)
    s2 = tl.where(keep, bits.to(tl.float32, bitcast=True) * 1.4426950408889634,
                  float('-inf'))                                                # log2(e) * s
    m = tl.max(s2, axis=1)
    p = tl.exp2(s2 - m[:, None])
    l = tl.sum(p, axis=1)
    out = _dot(p.to(v.dtype), v, PRECISION, UPCAST) / l[:, None]             # BM x BD fp32
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :],
             out.to(O.dtype.element_ty), mask=rd_ok)
    tl.store(LSE + bh * N + rows, m + tl.log2(l), mask=row_ok)

    keep3 = tl.reshape(keep.to(tl.int32), (BLOCK_M, BLOCK_N // 32, 32))
    words = tl.sum(keep3 << tl.arange(0, 32)[None, None, :], axis=2)          # BM x BN/32
    tl.store(MASK + (bh * N + rows[:, None]) * (BLOCK_N // 32)
             + tl.arange(0, BLOCK_N // 32)[None, :], words, mask=row_ok[:, None])

    if HAS_LABELS:
        lab_q = tl.load(LAB + b * N + rows, mask=row_ok, other=-1)
        lab_k = tl.load(LAB + b * N + cols, mask=col_ok, other=-2)
        same = keep & (lab_q[:, None] == lab_k[None, :])
        tl.store(KEPT + bh * N + rows, tl.sum(keep.to(tl.int32), axis=1), mask=row_ok)
        tl.store(SAME + bh * N + rows, tl.sum(same.to(tl.int32), axis=1), mask=row_ok)


@_jit
def _bwd_dq_kernel(Q, K, V, O, DO, DQ, LSE, DELTA, MASK,
                   sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                   sd_b, sd_h, sd_n, H, N, HD, scale,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    rd_ok = row_ok[:, None] & (dims < HD)[None, :]
    cd_ok = (cols < N)[:, None] & (dims < HD)[None, :]
    q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, dims, rd_ok)
    k = _tile(K, b, h, sk_b, sk_h, sk_n, cols, dims, cd_ok)
    v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)
    o = _tile(O, b, h, so_b, so_h, so_n, rows, dims, rd_ok)
    do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, dims, rd_ok)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)              # BM
    tl.store(DELTA + bh * N + rows, delta, mask=row_ok)
    lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
    words = tl.load(MASK + (bh * N + rows[:, None]) * (BLOCK_N // 32)
                    + tl.arange(0, BLOCK_N // 32)[None, :], mask=row_ok[:, None], other=0)
    keep = _unpack(words, BLOCK_M, BLOCK_N)                                    # BM x BN

    s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale
    p = tl.where(keep, tl.exp2(s * 1.4426950408889634 - lse[:, None]), 0.)
    dp = _dot(do, tl.trans(v), PRECISION, UPCAST)
    ds = p * (dp - delta[:, None])
    dq = _dot(ds.to(k.dtype), k, PRECISION, UPCAST) * scale                   # BM x BD
    tl.store(DQ + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :],
             dq.to(DQ.dtype.element_ty), mask=rd_ok)


@_jit
def _bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, MASK,
                     sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                     sd_b, sd_h, sd_n, H, N, HD, scale, WORDS,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HD
    cd_ok = (cols < N)[:, None] & dim_ok[None, :]
    k = _tile(K, b, h, sk_b, sk_h, sk_n, cols, dims, cd_ok)                   # BN x BD
    v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    word_idx = pid_n * (BLOCK_N // 32) + tl.arange(0, BLOCK_N // 32)
    for start in range(0, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < N
        rd_ok = row_ok[:, None] & dim_ok[None, :]
        q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, dims, rd_ok)               # BM x BD
        do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, dims, rd_ok)
        lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
        delta = tl.load(DELTA + bh * N + rows, mask=row_ok, other=0.)
        words = tl.load(MASK + (bh * N + rows[:, None]) * WORDS + word_idx[None, :],
                        mask=row_ok[:, None], other=0)
        keep = _unpack(words, BLOCK_M, BLOCK_N)                                # BM x BN

        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale
        p = tl.where(keep, tl.exp2(s * 1.4426950408889634 - lse[:, None]), 0.)
        dv += _dot(tl.trans(p).to(do.dtype), do, PRECISION, UPCAST)
        dp = _dot(do, tl.trans(v), PRECISION, UPCAST)
        ds = p * (dp - delta[:, None])
        dk += _dot(tl.trans(ds).to(q.dtype), q, PRECISION, UPCAST)
    tl.store(DK + b * so_b + h * so_h + cols[:, None] * so_n + dims[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=cd_ok)
    tl.store(DV + b * so_b + h * so_h + cols[:, None] * so_n + dims[None, :],
             dv.to(DV.dtype.element_ty), mask=cd_ok)


#: the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 when triton was imported)
INTERPRETED = triton is not None and isinstance(_fwd_kernel, InterpretedFunction)


def triton_unsupported(q: Tensor, dropout_p: float = 0.) -> Optional[str]:
    """Why the kernel cannot run on q (T x H x N x hd, checked), or None when it can."""
    if triton is None:
        return 'triton is not importable'
    if dropout_p:
        return f'dropout_p={dropout_p} (only the reference applies attention dropout)'
    if not (q.is_cuda or INTERPRETED):
        return (f'{q.device.type} tensors need the interpreter: TRITON_INTERPRET=1 before triton '
                'is imported')
    if q.dtype not in KERNEL_DTYPES:
        return f'dtype {q.dtype} (supported: {KERNEL_DTYPES})'
    if q.shape[2] > MAX_TOKENS:
        return f'N={q.shape[2]} tokens > {MAX_TOKENS}'
    if not HEAD_DIMS[0] <= q.shape[3] <= HEAD_DIMS[1]:
        return f'head dim {q.shape[3]} outside {HEAD_DIMS}'
    return None


def _blocks(n: int, hd: int) -> Tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps) of the row kernels (all keys in one block): 32 logits
    per thread, which ptxas (sm_90, bf16, hd 64) fits in registers without spilling."""
    block_n = max(32, triton.next_power_of_2(n))
    block_m = min(64 if block_n <= 128 else 32, block_n)
    return block_m, block_n, max(16, triton.next_power_of_2(hd)), max(4, block_m * block_n // 1024)


def _dkdv_blocks(n: int, hd: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the dK/dV kernel: key blocks of 64 (32-word aligned)."""
    block_n = min(64, max(32, triton.next_power_of_2(n)))
    return block_n, block_n, 4 if hd <= 64 else 8


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t: Tensor) -> Tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _precision_mode(dtype: torch.dtype) -> str:
    return 'ieee' if dtype == torch.float32 else 'tf32'  # fp32 inputs: no TF32 rounding of q, k


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and INTERPRETED


def _triton_forward(q: Tensor, k: Tensor, v: Tensor, topk: int, labels: Optional[Tensor]
                    ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Run the forward kernel: (out, lse2, mask words, kept, same); kept/same None w/o labels."""
    t, h, n, hd = q.shape
    block_m, block_n, block_d, warps = _blocks(n, hd)
    out = torch.empty((t, h, n, hd), dtype=q.dtype, device=q.device)
    lse = torch.empty((t * h, n), dtype=torch.float32, device=q.device)
    mask = torch.empty((t * h, n, block_n // 32), dtype=torch.int32, device=q.device)
    if labels is None:
        lab = kept = same = None
    else:
        lab = labels.to(device=q.device, dtype=torch.int32).contiguous()
        kept = torch.empty((t * h, n), dtype=torch.int32, device=q.device)
        same = torch.empty_like(kept)
    grid = (triton.cdiv(n, block_m), t * h)
    _fwd_kernel[grid](
        q, k, v, out, lse, mask, lab if lab is not None else lse, kept if kept is not None else lse,
        same if same is not None else lse, *_strides(q), *_strides(k), *_strides(v),
        *_strides(out), h, n, hd, topk, hd ** -0.5, HAS_LABELS=labels is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=_precision_mode(q.dtype),
        UPCAST=_upcast(q.dtype), num_warps=warps)
    return out, lse, mask, kept, same


class _TopKAttention(torch.autograd.Function):
    """Kernel forward and backward; the second output is the precision (empty without labels)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, topk: int,
                labels: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        out, lse, mask, kept, same = _triton_forward(q, k, v, topk, labels)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        precision = _precision(same, kept) if labels is not None else q.new_empty(0).float()
        ctx.mark_non_differentiable(precision)
        return out, precision

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_precision: Tensor):
        q, k, v, out, lse, mask = ctx.saved_tensors
        grad_out = _unit_last(grad_out)
        t, h, n, hd = q.shape
        block_m, block_n, block_d, warps = _blocks(n, hd)
        dq = torch.empty_like(out)
        dk = torch.empty_like(out)
        dv = torch.empty_like(out)
        delta = torch.empty_like(lse)
        common = dict(BLOCK_D=block_d, PRECISION=_precision_mode(q.dtype), UPCAST=_upcast(q.dtype))
        _bwd_dq_kernel[(triton.cdiv(n, block_m), t * h)](
            q, k, v, out, grad_out, dq, lse, delta, mask, *_strides(q), *_strides(k), *_strides(v),
            *_strides(out), *_strides(grad_out), h, n, hd, hd ** -0.5,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, **common)
        block_m2, block_n2, warps2 = _dkdv_blocks(n, hd)
        _bwd_dkdv_kernel[(triton.cdiv(n, block_n2), t * h)](
            q, k, v, grad_out, dk, dv, lse, delta, mask, *_strides(q), *_strides(k), *_strides(v),
            *_strides(out), *_strides(grad_out), h, n, hd, hd ** -0.5, block_n // 32,
            BLOCK_M=block_m2, BLOCK_N=block_n2, num_warps=warps2, **common)
        return dq, dk, dv, None, None


def topk_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, labels: Optional[Tensor] = None,
                   dropout_p: float = 0., impl: str = 'auto') -> Tuple[Tensor, Optional[Tensor]]:
    """Top-K (homologous) attention.

    q, k, v: T x H x N x hd, one dtype (fp16, bf16 or fp32); labels: T x N source id of each
    token, or None. Each query keeps the keys whose fp32 logit q.k * hd**-0.5 is >= its K-th
    largest logit (ties all kept), softmax over the kept keys, times V. Returns (out T x H x N x hd
    in q.dtype, precision): precision is a 0-dim fp32 tensor without grad, the fraction of kept
    (query, key) pairs whose labels are equal over the whole batch and all heads; None without
    labels. impl: 'auto' (the kernel on fp16/bf16 CUDA tensors when supported, see the module
    docstring), 'triton' (the kernel; on CPU tensors only under TRITON_INTERPRET=1; ValueError
    when unsupported) or 'reference'. dropout_p > 0 needs the reference.
    """
    if impl not in IMPLS:
        raise ValueError(f'impl={impl!r}; choose from {IMPLS}')
    _check_inputs(q, k, v, topk, labels)
    why_not = triton_unsupported(q, dropout_p)
    if impl == 'triton' and why_not is not None:
        raise ValueError(f'impl=triton cannot run: {why_not}')
    use_kernel = impl == 'triton' or (impl == 'auto' and why_not is None and q.is_cuda
                                      and q.dtype in AUTO_DTYPES)
    if not use_kernel:
        return topk_attention_reference(q, k, v, topk, labels, dropout_p)
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        out, precision = _TopKAttention.apply(q, k, v, topk, labels)
    return out, (precision if labels is not None else None)
