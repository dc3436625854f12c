"""Homologous (top-K) attention: a fused Triton kernel and its PyTorch reference.

Each query keeps the keys whose logit ``s = (q . k) * hd**-0.5`` (computed in fp32 whatever the
input dtype) is >= the query's K-th largest logit, takes the softmax over the kept keys only and
multiplies by V. Ties at the K-th value are all kept, so a row may keep more than K keys; -0.0 and
+0.0 count as equal. Both paths implement exactly this rule.

Reference (``topk_attention_reference``): eager PyTorch on the explicit T x H x N x N fp32 logits
(``topk``, compare, masked softmax); it differentiates through autograd, runs on any device and
is the only path with attention dropout.

Kernel forward (one pass): one program per (block of BLOCK_M queries, batch x head) holds the
fp32 logits of its queries against all N keys on chip (keys padded to a power of two >= 32, at
most 512), with ``num_warps = BLOCK_M / 16`` so that each warp owns whole rows of the MMA tile
and a row count is an intra-warp reduction. The K-th largest logit is found exactly by a bounded
bisection on the order-preserving int32 image of the logits (-0.0 mapped onto +0.0), bracketed
per row by the row's smallest and largest image and stopped for the whole block as soon as every
row has count(image >= lo) == K or an interval of width one (then lo is the K-th largest image):
at most 32 rounds, usually far fewer. Softmax over the kept keys, P @ V, the base-2 log-sum-exp
and the keep mask (one bit per padded key, int32 words) are written in the same pass. Given
labels, the ``precision`` statistic (``hr_acc``) is computed in PyTorch from that keep mask
(``keep_from_bits``, then ``homologous_precision``, as on the reference path). (``tl.topk``
exists in this Triton but needs a power-of-two K and sorts a whole bitonic network per row; it is
not used.)

Kernel backward (FlashAttention-2 shape): one program per (block of keys, batch x head) keeps K,
V and the dK, dV accumulators on chip and loops over the query blocks: logits recomputed once,
five matrix products (S = Q K^T, dV += P^T dO, dP = dO V^T, dK += dS^T Q, dQ_part = dS K), no
selection work: the keep bits saved by the forward (not a recomputed threshold, so the backward
keeps exactly the forward's keys however the compiler orders the products). delta =
rowsum(dO * O) is one PyTorch reduction before it. dQ: deterministic by default, each key block
writes its fp32 partial dQ (n_key_blocks x T x H x N x hd) and they are summed afterwards in a
fixed order; ``atomic_dq=True`` adds the partials with fp32 atomics instead (less memory
traffic, summation order not reproducible).

Both kernels are wrapped as torch custom ops (``mixedae::topk_attention_fwd`` /
``mixedae::topk_attention_bwd``) with fake implementations and registered autograd, so
``torch.compile`` traces through ``topk_attention`` without a graph break.

Dispatch (``impl='auto'``): the kernel on fp16/bf16 CUDA tensors when Triton imports, the shape
is supported (N <= 512, 16 <= head dim <= 128) and there is no dropout; the reference otherwise.
``impl='triton'`` also takes fp32 (exact IEEE products, no TF32), but its fp32 tiles do not fit in
registers, so 'auto' leaves fp32 to the reference. ``impl='triton'`` on CPU tensors runs the same
kernels in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before
triton is first imported (Triton reads it when its own and these kernels are decorated);
tests/conftest.py sets it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Optional, Tuple

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


def homologous_precision(keep: Tensor, labels: Tensor, num_prefix: int) -> Tensor:
    """The homologous-recognition accuracy ``hr_acc`` of one top-K selection.

    keep: T x H x N x N bool (query, key) kept; labels: T x N source image of each token; the
    first ``num_prefix`` tokens of each sequence are prefix (class) tokens. Counts the pairs
    (patch query, kept patch key other than the query itself) over all sequences and heads and
    returns the fraction whose key has the query's label, a 0-dim fp32 tensor; NaN when no pair
    qualifies (every patch query keeps only itself and prefix tokens).
    """
    if keep.dim() != 4 or keep.shape[-1] != keep.shape[-2] or labels.shape != (
            keep.shape[0], keep.shape[-1]):
        raise ValueError(f'keep must be T x H x N x N and labels T x N, got '
                         f'{tuple(keep.shape)}, {tuple(labels.shape)}')
    n = keep.shape[-1]
    if not 0 <= num_prefix <= n:
        raise ValueError(f'num_prefix={num_prefix} must be in [0, N={n}]')
    lab = labels[:, num_prefix:]                                               # T x P
    others = ~torch.eye(n - num_prefix, dtype=torch.bool, device=keep.device)  # P x P
    counted = keep[:, :, num_prefix:, num_prefix:] & others                    # T x H x P x P
    same = counted & (lab.unsqueeze(-1) == lab.unsqueeze(-2)).unsqueeze(1)
    return (same.sum().double() / counted.sum().double()).float()


def hr_acc_chance(num_patches: int, group_size: int) -> float:
    """Expected ``hr_acc`` when each query's kept other patch keys are drawn at random: a mixed
    sequence of N patches holds N/G of each of its G images, so (N/G - 1) / (N - 1)."""
    if group_size < 1 or num_patches < 2 or num_patches % group_size:
        raise ValueError(f'need G >= 1 dividing N >= 2 patches, got N={num_patches}, '
                         f'G={group_size}')
    return (num_patches // group_size - 1) / (num_patches - 1)


def keep_from_bits(mask: Tensor, n: int) -> Tensor:
    """The kernel's keep bits, (T*H) x N x W int32 words (bit j of word w = key 32w+j), as a
    (T*H) x N x n bool keep mask."""
    bits = (mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32, device=mask.device)) & 1
    return bits.flatten(-2)[..., :n].bool()                                   # (T*H) x N x n


def topk_attention_reference(q: Tensor, k: Tensor, v: Tensor, topk: int,
                             labels: Optional[Tensor] = None, dropout_p: float = 0.,
                             num_prefix: int = 0) -> Tuple[Tensor, Optional[Tensor]]:
    """Eager top-K attention; same contract as ``topk_attention``."""
    _check_inputs(q, k, v, topk, labels)
    with torch.autocast(q.device.type, enabled=False):  # fp32 logits even under autocast
        logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # T x H x N x N
        keep = topk_keep(logits, topk)
        attn = logits.masked_fill(~keep, float('-inf')).softmax(dim=-1)
        if dropout_p:
            attn = F.dropout(attn, p=dropout_p)
        out = (attn @ v.float()).to(q.dtype)
    precision = None if labels is None else homologous_precision(keep, labels, num_prefix)
    return out, precision


# ------------------------------------------------------------------------------------------------
# Triton kernels (interpreted when TRITON_INTERPRET=1 was set before triton was imported).
# Tensors are T x H x N x hd with unit stride on hd; ``bh`` indexes T x H; LSE and DELTA are
# (T*H) x N; MASK is (T*H) x N x W int32 words (W = padded keys / 32), bit j of word w =
# key 32w+j; DQP is (key blocks) x T x H x N x hd fp32 (1 x ... with ATOMIC).
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
def _image(s):
    """Order-preserving int32 image of fp32 ``s`` (negative floats get their magnitude bits
    flipped); -0.0 gets +0.0's image, 0."""
    bits = s.to(tl.int32, bitcast=True)
    img = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return tl.where(img == -1, 0, img)


@_jit
def _from_image(img):
    """fp32 value of an int32 image (inverse of ``_image`` up to the sign of zero)."""
    return tl.where(img < 0, img ^ 0x7FFFFFFF, img).to(tl.float32, bitcast=True)


@_jit
def _kth_image(img, col_ok, topk):
    """Per row of the BM x BN int32 images (padded columns: INT32_MIN, never counted): a
    threshold t with {img >= t} = {img >= the row's K-th largest image}. Bisection between the
    row's smallest and largest image; keeps count(img >= lo) >= K > count(img >= hi) and stops
    the whole block when every row has count(img >= lo) == K or hi == lo + 1: at most 32
    rounds."""
    lo = tl.min(tl.where(col_ok[None, :], img, 0x7FFFFFFF), axis=1)                # BM
    hi = tl.max(img, axis=1) + 1
    count_lo = tl.sum(col_ok.to(tl.int32), axis=0) + tl.zeros_like(lo)
    active = (count_lo != topk) & (hi > lo + 1)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)                  # floor((lo + hi) / 2)
        count = tl.sum((img >= mid[:, None]).to(tl.int32), axis=1)
        up = active & (count >= topk)
        lo = tl.where(up, mid, lo)
        count_lo = tl.where(up, count, count_lo)
        hi = tl.where(active & (count < topk), mid, hi)
        active = (count_lo != topk) & (hi > lo + 1)
    return lo


@_jit
def _unpack(words, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """BM x BN/32 int32 words -> BM x BN bool keep mask."""
    bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
    return tl.reshape(bits, (BLOCK_M, BLOCK_N)) != 0


@_jit
def _fwd_kernel(Q, K, V, O, LSE, MASK,
                sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                H, N, HD, topk, scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    img = tl.where(col_ok[None, :], _image(_dot(q, tl.trans(k), PRECISION, UPCAST) * scale),
                   -0x7FFFFFFF - 1)                                            # BM x BN int32
    kth = _kth_image(img, col_ok, topk)                                        # BM
    # only s2 stays live from here on: the keep mask is re-read from it (kept logits are finite)
    s2 = tl.where(img >= kth[:, None],
                  _from_image(img) * 1.4426950408889634, float('-inf'))       # log2(e) * s
    keep3 = tl.reshape((s2 > float('-inf')).to(tl.int32), (BLOCK_M, BLOCK_N // 32, 32))
    words = tl.sum(keep3 << tl.arange(0, 32)[None, None, :], axis=2)          # BM x BN/32
    tl.store(MASK + (bh * N + rows[:, None]) * (BLOCK_N // 32)
             + tl.arange(0, BLOCK_N // 32)[None, :], words, mask=row_ok[:, None])

    m = tl.max(s2, axis=1)
    p = tl.exp2(s2 - m[:, None])
    l = tl.sum(p, axis=1)
    v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)                   # BN x BD
    out = _dot(p.to(v.dtype), v, PRECISION, UPCAST) / l[:, None]             # BM x BD fp32
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :],
             out.to(O.dtype.element_ty), mask=rd_ok)
    tl.store(LSE + bh * N + rows, m + tl.log2(l), mask=row_ok)


@_jit
def _bwd_kernel(Q, K, V, DO, DQP, DK, DV, LSE, DELTA, MASK,
                sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                sd_b, sd_h, sd_n, sp_k, sp_b, sp_h, sp_n, H, N: tl.constexpr, HD, scale, WORDS,
                ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
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
    dqp = DQP + (0 if ATOMIC else pid_n * sp_k) + b * sp_b + h * sp_h
    # N is constexpr because it bounds this loop: Triton 3.6's interpreter turns a runtime
    # bound into int() of a 1-element array, which numpy >= 2.4 refuses (docs/testing.md)
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

        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale                    # 1: S = Q K^T
        p = tl.where(keep, tl.exp2(s * 1.4426950408889634 - lse[:, None]), 0.)
        dv += _dot(tl.trans(p).to(do.dtype), do, PRECISION, UPCAST)           # 2: dV += P^T dO
        dp = _dot(do, tl.trans(v), PRECISION, UPCAST)                          # 3: dP = dO V^T
        ds = p * (dp - delta[:, None])
        dk += _dot(tl.trans(ds).to(q.dtype), q, PRECISION, UPCAST)            # 4: dK += dS^T Q
        dq = _dot(ds.to(k.dtype), k, PRECISION, UPCAST) * scale               # 5: dS K
        offsets = dqp + rows[:, None] * sp_n + dims[None, :]
        if ATOMIC:
            tl.atomic_add(offsets, dq, mask=rd_ok)
        else:
            tl.store(offsets, dq, mask=rd_ok)
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


class Blocks(NamedTuple):
    """Launch shape of the two kernels. fwd_m: query rows per forward program (warps =
    fwd_m / 16, each warp owning 16 whole rows); bwd_m / bwd_n: query rows per step / keys per
    backward program (bwd_n a multiple of 32 dividing the padded key count); bwd_warps;
    atomic_dq: add the backward's partial dQ with atomics instead of summing per-key-block
    partials afterwards (not deterministic)."""
    fwd_m: int
    bwd_m: int
    bwd_n: int
    bwd_warps: int
    atomic_dq: bool = False


def padded_keys(n: int) -> int:
    """Keys per forward tile: N padded to a power of two >= 32."""
    return max(32, 1 << (n - 1).bit_length())


def default_blocks(n: int, hd: int) -> Blocks:
    """Forward: 64 rows (4 warps) up to 256 keys, 32 rows (2 warps) at 512: the fewest spills
    ptxas reports for sm_90 at N' = 200 among 16/32/64 rows; backward: FlashAttention-2's dK/dV
    tile (32 queries x 64 keys). Chosen without GPU timings:
    tools/benchmark_topk_kernels.py times the alternatives."""
    block_n = padded_keys(n)
    return Blocks(fwd_m=64 if block_n <= 256 else 32, bwd_m=32, bwd_n=min(64, block_n),
                  bwd_warps=4 if hd <= 64 else 8)


def _check_blocks(blocks: Blocks, n: int) -> None:
    block_n = padded_keys(n)
    for name in ('fwd_m', 'bwd_m'):
        rows = getattr(blocks, name)
        if rows < 16 or rows & (rows - 1):
            raise ValueError(f'{name}={rows} must be a power of two >= 16')
    if blocks.bwd_n % 32 or block_n % blocks.bwd_n:
        raise ValueError(f'bwd_n={blocks.bwd_n} must be a multiple of 32 dividing {block_n}')


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.stride())[:-1]


def _consts(q: Tensor) -> dict:
    """Constexprs shared by both kernels: head-dim tile, dot precision, interpreter upcast."""
    return dict(BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
                PRECISION='ieee' if q.dtype == torch.float32 else 'tf32',  # fp32: no TF32
                UPCAST=q.dtype == torch.bfloat16 and INTERPRETED)


def triton_forward(q: Tensor, k: Tensor, v: Tensor, topk: int, blocks: Optional[Blocks] = None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """Run the forward kernel on T x H x N x hd q, k, v (unit stride on hd): (out, lse2 (T*H) x N
    base-2 log-sum-exp, mask (T*H) x N x W int32 keep bits)."""
    t, h, n, hd = q.shape
    blocks = blocks or default_blocks(n, hd)
    _check_blocks(blocks, n)
    block_n = padded_keys(n)
    out = torch.empty((t, h, n, hd), dtype=q.dtype, device=q.device)
    lse = torch.empty((t * h, n), dtype=torch.float32, device=q.device)
    mask = torch.empty((t * h, n, block_n // 32), dtype=torch.int32, device=q.device)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _fwd_kernel[(triton.cdiv(n, blocks.fwd_m), t * h)](
            q, k, v, out, lse, mask, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            h, n, hd, topk, hd ** -0.5, BLOCK_M=blocks.fwd_m, BLOCK_N=block_n,
            num_warps=max(1, blocks.fwd_m // 16),
            **_consts(q))
    return out, lse, mask


def triton_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, lse: Tensor,
                    mask: Tensor, blocks: Optional[Blocks] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv of the forward that returned ``out``, ``lse``, ``mask``."""
    t, h, n, hd = q.shape
    blocks = blocks or default_blocks(n, hd)
    _check_blocks(blocks, n)
    grad_out = _unit_last(grad_out)
    delta = (grad_out.float() * out.float()).sum(-1).view(t * h, n)       # rowsum(dO * O)
    key_blocks = triton.cdiv(n, blocks.bwd_n)
    # every key block writes all of its partial; atomics add into one zeroed sum
    dq_parts = (torch.zeros((1, t, h, n, hd), dtype=torch.float32, device=q.device)
                if blocks.atomic_dq else
                torch.empty((key_blocks, t, h, n, hd), dtype=torch.float32, device=q.device))
    dk = torch.empty((t, h, n, hd), dtype=q.dtype, device=q.device)
    dv = torch.empty_like(dk)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _bwd_kernel[(key_blocks, t * h)](
            q, k, v, grad_out, dq_parts, dk, dv, lse, delta, mask, *_strides(q), *_strides(k),
            *_strides(v), *_strides(dk), *_strides(grad_out), *_strides(dq_parts), h, n, hd,
            hd ** -0.5, mask.shape[-1], ATOMIC=blocks.atomic_dq, BLOCK_M=blocks.bwd_m,
            BLOCK_N=blocks.bwd_n, num_warps=blocks.bwd_warps, **_consts(q))
    return dq_parts.sum(0).to(q.dtype), dk, dv


# ----------------------------------------------------------------- custom ops and autograd
@torch.library.custom_op('mixedae::topk_attention_fwd', mutates_args=())
def _fwd_op(q: Tensor, k: Tensor, v: Tensor, topk: int) -> Tuple[Tensor, Tensor, Tensor]:
    return triton_forward(q, k, v, topk)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, topk):
    t, h, n, _ = q.shape
    return (torch.empty_like(q), q.new_empty((t * h, n), dtype=torch.float32),
            q.new_empty((t * h, n, padded_keys(n) // 32), dtype=torch.int32))


@torch.library.custom_op('mixedae::topk_attention_bwd', mutates_args=())
def _bwd_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, lse: Tensor,
            mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return triton_backward(q, k, v, out, grad_out, lse, mask)


@_bwd_op.register_fake
def _bwd_fake(q, k, v, out, grad_out, lse, mask):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, _ = inputs
    out, lse, mask = output
    ctx.save_for_backward(q, k, v, out, lse, mask)


def _backward(ctx, grad_out, *_grad_statistics):
    q, k, v, out, lse, mask = ctx.saved_tensors
    return (*_bwd_op(q, k, v, out, grad_out, lse, mask), None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def topk_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, labels: Optional[Tensor] = None,
                   dropout_p: float = 0., impl: str = 'auto', num_prefix: int = 0
                   ) -> Tuple[Tensor, Optional[Tensor]]:
    """Top-K (homologous) attention.

    q, k, v: T x H x N x hd, one dtype (fp16, bf16 or fp32); labels: T x N source id of each
    token, or None. Each query keeps the keys whose fp32 logit q.k * hd**-0.5 is >= its K-th
    largest logit (ties all kept), softmax over the kept keys, times V. Returns (out T x H x N x hd
    in q.dtype, precision): precision is ``homologous_precision`` of the keep mask (``hr_acc``:
    over all sequences and heads, the fraction of the (patch query, kept patch key other than
    itself) pairs whose labels are equal; the first ``num_prefix`` tokens are prefix tokens), a
    0-dim fp32 tensor without grad; None without labels. impl: 'auto' (the kernel on fp16/bf16
    CUDA tensors when supported, see the module
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
        return topk_attention_reference(q, k, v, topk, labels, dropout_p, num_prefix)
    out, _, mask = _fwd_op(_unit_last(q), _unit_last(k), _unit_last(v), topk)
    if labels is None:
        return out, None
    keep = keep_from_bits(mask, q.shape[2]).view(*q.shape[:3], q.shape[2])  # T x H x N x N
    return out, homologous_precision(keep, labels, num_prefix)
