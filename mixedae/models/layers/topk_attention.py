"""Homologous (top-K) attention: a fused Triton kernel and its PyTorch reference.

Each query keeps the keys whose logit ``s = (q . k) * hd**-0.5`` (computed in fp32 whatever the
input dtype) is >= the query's K-th largest logit, takes the softmax over the kept keys only and
multiplies by V. Ties at the K-th value are all kept, so a row may keep more than K keys; -0.0 and
+0.0 count as equal. Both paths implement exactly this rule.

Reference (``topk_attention_reference``): eager PyTorch on the explicit T x H x N x N fp32 logits
(``topk``, compare, masked softmax); it differentiates through autograd, runs on any device and
is the only path with attention dropout.

NaN and infinities (one rule for the reference, the interpreter and the GPU): a NaN logit ranks
as +inf when the keys are selected (``topk_keep`` and the kernel both rank NaN -> +inf: on the GPU
a NaN's bits, e.g. the canonical 0x7FFFFFFF, never reach an order-preserving integer image);
-inf and +inf rank as themselves. So a row keeps its NaN and +inf logits whenever K reaches them,
and its output is then NaN (the softmax of a kept +inf or NaN is NaN, as torch's); a row whose
kept logits are all -inf outputs NaN too (0 / 0); kept -inf logits otherwise get weight 0.

Kernel forward (one pass): one program per (block of BLOCK_M queries, batch x head) holds the
fp32 logits of its queries against all N keys on chip (keys padded to a power of two >= 32, at
most 512; padded keys are -inf and never counted). The K-th largest logit is found exactly per
row by ``_kth_threshold``: each round compares the row with one probe and counts (plus the
largest value below the probe), starting from the row's normal quantile (mean + z0 * std) and
interpolating the counts in value space, with bisection safeguards; a row ends when its probe
leaves exactly K or K - 1 keys at or above it, or when its bracket has no value left between the
K-th value and the next (ties); the block ends when all its rows have, after at most 16 + 33
rounds (on average about 6 on Gaussian logits, 8 to 10 on tie-heavy ones at N' = 200;
docs/benchmarks.md). Softmax over the kept keys, P @ V,
the base-2 log-sum-exp and the keep mask (one bit per padded key, int32 words) are written in
the same pass. Given labels, the ``precision`` statistic (``hr_acc``) is computed in PyTorch
from that keep mask (``keep_from_bits``, then ``homologous_precision``, as on the reference
path). (``tl.topk`` exists in this Triton but needs a power-of-two K and sorts a whole bitonic
network per row; it is not used.)

Kernel backward (FlashAttention-2 shape, two kernels, no PyTorch pass): the dQ kernel, one
program per block of queries, computes delta = rowsum(dO * O) for its rows (stored for the
other kernel), then walks the key blocks in order (S = Q K^T, dP = dO V^T, dQ += dS K) and
writes dQ once, in the input dtype; the dK/dV kernel, launched after it, one program per block
of keys, walks the query blocks with the keys as the rows of every product (S^T = K Q^T,
dV += P^T dO, dP^T = V dO^T, dK += dS^T Q). Logits are recomputed in both; the keep bits saved
by the forward replace any selection work (so the backward keeps exactly the forward's keys
however the compiler orders a recomputed product). No atomics: the result is deterministic.

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
import statistics
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
    """Boolean mask of the k largest logits along the last dim (ties at the k-th kept; NaN
    ranks as +inf, see the module docstring)."""
    ranked = torch.where(logits.isnan(), float('inf'), logits)
    return ranked >= ranked.topk(k, dim=-1).values[..., -1:]


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
# (T*H) x N fp32; MASK is (T*H) x N x W int32 words (W = padded keys / 32), bit j of word w =
# key 32w+j. Loop bounds are constexprs (Triton 3.6's interpreter cannot take a runtime one).
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
def _image(x):
    """Order-preserving int32 image of fp32 ``x`` (negative floats get their magnitude bits
    flipped); -0.0 gets +0.0's image, 0. Only called on values without NaN."""
    bits = x.to(tl.int32, bitcast=True)
    img = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return tl.where(img == -1, 0, img)


@_jit
def _from_image(img):
    """fp32 value of an int32 image (inverse of ``_image`` up to the sign of zero)."""
    return tl.where(img < 0, img ^ 0x7FFFFFFF, img).to(tl.float32, bitcast=True)


@_jit
def _selection_logits(s, col_ok):
    """The logits the selection ranks: NaN -> +inf (the NaN rule), padded columns -> -inf."""
    return tl.where(col_ok[None, :], tl.where(s != s, float('inf'), s), float('-inf'))


@_jit
def _probe(s, tv, lo, hi, gap, c_lo, c_hi, same, done, late, topk):
    """One round of ``_kth_threshold``: probe each active row near ``tv``, count, update."""
    lo_v = _from_image(lo)
    hi_v = _from_image(hi)
    imid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)                     # floor((lo + hi) / 2)
    mid_v = lo_v * 0.5 + hi_v * 0.5
    ti = tl.where((tv > lo_v) & (tv < hi_v), _image(tv),
                  tl.where((mid_v > lo_v) & (mid_v < hi_v), _image(mid_v), imid))
    ti = tl.where((same >= 3) | (same <= -3) | late, imid, ti)
    ti = tl.maximum(tl.minimum(ti, gap), lo + 1)
    ge = s >= _from_image(ti)[:, None]
    c = tl.sum(ge.to(tl.int32), axis=1)
    below = _image(tl.max(tl.where(ge, float('-inf'), s), axis=1))
    up = (~done) & (c >= topk)
    dn = (~done) & (c < topk)
    end_dn = dn & (c == topk - 1)                 # the value below the probe is the K-th
    done = done | (up & ((c == topk) | (ti == gap))) | end_dn
    lo = tl.where(up, ti, tl.where(end_dn, below, lo))
    c_lo = tl.where(up, c.to(tl.float32), c_lo)
    hi = tl.where(dn, ti, hi)
    c_hi = tl.where(dn, c.to(tl.float32), c_hi)
    gap = tl.where(dn, below, gap)
    same = tl.where(up, tl.maximum(same, 0) + 1, tl.where(dn, tl.minimum(same, 0) - 1, same))
    met = (~done) & (gap <= lo)                                      # nothing in (lo, gap]
    return tl.where(met, gap, lo), hi, gap, c_lo, c_hi, same, done | met


@_jit
def _kth_threshold(s, col_ok, topk, n, z0):
    """Per row of the BM x BN selection logits ``s`` (``_selection_logits``): a threshold t with
    {s >= t} = {s >= the row's K-th largest value}, and the number of rounds the block took.

    Each round counts one probe t (c = count(s >= t)) and takes the largest value below it;
    invariants: count(s >= lo) >= K > count(s >= hi), ``gap`` the largest value below hi. A row
    ends, with lo its threshold, when c == K (lo = t), c == K - 1 (lo = the value below t), or
    when nothing lies in (lo, gap] or t == gap with c >= K (lo = gap, the K-th value: ties end
    here). Probes, in int32 image space clamped to [lo + 1, gap]: linear interpolation of the
    counts between lo and hi in value space (regula falsi; the first one lands on the row's
    normal quantile mean + z0 * std, z0 = Phi^-1(1 - (K - 1/2) / N) from the launcher, through
    the starting c_hi), bisection of the value interval when that leaves (lo, hi) or is not
    finite, and bisection of the image interval after three moves of the same end or after 16
    rounds, so that the block ends within 16 + 33 rounds."""
    lo = _image(tl.min(tl.where(col_ok[None, :], s, float('inf')), axis=1))     # BM
    gap = _image(tl.max(s, axis=1))
    hi = gap + 1                                  # the row maximum is <= +inf: no overflow
    mean = tl.sum(tl.where(col_ok[None, :], s, 0.), axis=1) / n
    var = tl.sum(tl.where(col_ok[None, :], s * s, 0.), axis=1) / n - mean * mean
    c_lo = tl.zeros_like(mean) + n
    same = tl.zeros_like(lo)                      # > 0: lo moved that many times in a row; < 0: hi
    done = (c_lo == topk) | (gap <= lo)
    # c_hi starts as the count that makes the first interpolation land on the row's normal
    # quantile (it is a real count once a probe moves hi)
    lo_v = _from_image(lo)
    tv = mean + z0 * tl.sqrt(tl.maximum(var, 0.))
    c_hi = c_lo - (c_lo - (topk - 0.5)) * (_from_image(hi) - lo_v) / (tv - lo_v)
    rounds = 0
    while tl.max((~done).to(tl.int32), axis=0) > 0:
        lo_v = _from_image(lo)
        tv = lo_v + (_from_image(hi) - lo_v) * ((c_lo - (topk - 0.5)) / (c_lo - c_hi))
        lo, hi, gap, c_lo, c_hi, same, done = _probe(s, tv, lo, hi, gap, c_lo, c_hi, same, done,
                                                     rounds >= 16, topk)
        rounds += 1
    return _from_image(lo), rounds


@_jit
def _unpack(words, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """BM x BN/32 int32 words -> BM x BN bool keep mask."""
    bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
    return tl.reshape(bits, (BLOCK_M, BLOCK_N)) != 0


@_jit
def _fwd_kernel(Q, K, V, O, LSE, MASK,
                sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                H, N, HD, topk, scale, z0, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    s = _selection_logits(_dot(q, tl.trans(k), PRECISION, UPCAST) * scale, col_ok)  # BM x BN
    thr, _ = _kth_threshold(s, col_ok, topk, N, z0)                           # BM
    keep = (s >= thr[:, None]) & col_ok[None, :]
    keep3 = tl.reshape(keep.to(tl.int32), (BLOCK_M, BLOCK_N // 32, 32))
    words = tl.sum(keep3 << tl.arange(0, 32)[None, None, :], axis=2)          # BM x BN/32
    tl.store(MASK + (bh * N + rows[:, None]) * (BLOCK_N // 32)
             + tl.arange(0, BLOCK_N // 32)[None, :], words, mask=row_ok[:, None])

    s2 = tl.where(keep, s * 1.4426950408889634, float('-inf'))               # log2(e) * s
    m = tl.max(s2, axis=1)
    p = tl.exp2(s2 - m[:, None])
    l = tl.sum(p, axis=1)
    v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)                   # BN x BD
    out = _dot(p.to(v.dtype), v, PRECISION, UPCAST) / l[:, None]             # BM x BD fp32
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :],
             out.to(O.dtype.element_ty), mask=rd_ok)
    tl.store(LSE + bh * N + rows, m + tl.log2(l), mask=row_ok)


@_jit
def _kth_kernel(S, THR, ROUNDS, N, topk, z0, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The forward's selection alone on given fp32 logits (R x N rows): each row's threshold and
    each BLOCK_M-row block's round count."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    s = tl.load(S + rows[:, None] * N + cols[None, :], mask=col_ok[None, :], other=0.)
    thr, rounds = _kth_threshold(_selection_logits(s, col_ok), col_ok, topk, N, z0)
    tl.store(THR + rows, thr)
    tl.store(ROUNDS + pid, rounds)


@_jit
def _keep_tile(MASK, rows, row_ok, first_key, WORDS, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """BM x BN keep bits of queries ``rows`` and keys first_key .. first_key + BN - 1 of one
    (batch, head) slice (MASK points at it)."""
    words = tl.load(MASK + rows[:, None] * WORDS + first_key // 32
                    + tl.arange(0, BLOCK_N // 32)[None, :], mask=row_ok[:, None], other=0)
    return _unpack(words, BLOCK_M, BLOCK_N)


@_jit
def _dq_kernel(Q, K, V, O, DO, DQ, LSE, DELTA, MASK,
               sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
               sd_b, sd_h, sd_n, sg_b, sg_h, sg_n, H, N, HD, scale, WORDS, KEYS: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One program per (block of BLOCK_M queries, batch x head): delta = rowsum(dO * O) (stored
    for the dK/dV kernel, launched after this one), then dQ = scale * sum over the key blocks,
    in order, of dS K, written once in the input dtype (strides sg_*)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    dim_ok = dims < HD
    rd_ok = row_ok[:, None] & dim_ok[None, :]
    q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, dims, rd_ok)                   # BM x BD
    do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, dims, rd_ok)
    o = _tile(O, b, h, so_b, so_h, so_n, rows, dims, rd_ok)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)              # BM
    tl.store(DELTA + bh * N + rows, delta, mask=row_ok)
    lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
    mask = MASK + bh * N * WORDS
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start in range(0, KEYS, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        cd_ok = (cols < N)[:, None] & dim_ok[None, :]
        k = _tile(K, b, h, sk_b, sk_h, sk_n, cols, dims, cd_ok)               # BN x BD
        v = _tile(V, b, h, sv_b, sv_h, sv_n, cols, dims, cd_ok)
        keep = _keep_tile(mask, rows, row_ok, start, WORDS, BLOCK_M, BLOCK_N)  # BM x BN
        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale                    # S = Q K^T
        p = tl.where(keep, tl.exp2(s * 1.4426950408889634 - lse[:, None]), 0.)
        dp = _dot(do, tl.trans(v), PRECISION, UPCAST)                          # dP = dO V^T
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PRECISION, UPCAST)                       # dQ += dS K
    tl.store(DQ + b * sg_b + h * sg_h + rows[:, None] * sg_n + dims[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=rd_ok)


@_jit
def _dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, MASK,
                 sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sd_b, sd_h, sd_n,
                 sg_b, sg_h, sg_n, H, N, HD, scale, WORDS, ROWS: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One program per (block of BLOCK_N keys, batch x head) walks the query blocks, every
    product with the keys as its rows (S^T = K Q^T, dV += P^T dO, dP^T = V dO^T, dK += dS^T Q).
    dK and dV (strides sg_*) are written in the input dtype."""
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
    mask = MASK + bh * N * WORDS
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start in range(0, ROWS, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < N
        rd_ok = row_ok[:, None] & dim_ok[None, :]
        q = _tile(Q, b, h, sq_b, sq_h, sq_n, rows, dims, rd_ok)               # BM x BD
        do = _tile(DO, b, h, sd_b, sd_h, sd_n, rows, dims, rd_ok)
        lse = tl.load(LSE + bh * N + rows, mask=row_ok, other=0.)
        delta = tl.load(DELTA + bh * N + rows, mask=row_ok, other=0.)
        keep_t = tl.trans(_keep_tile(mask, rows, row_ok, pid_n * BLOCK_N, WORDS, BLOCK_M,
                                     BLOCK_N))                                 # BN x BM
        s_t = _dot(k, tl.trans(q), PRECISION, UPCAST) * scale                  # S^T = K Q^T
        p_t = tl.where(keep_t, tl.exp2(s_t * 1.4426950408889634 - lse[None, :]), 0.)
        dv += _dot(p_t.to(do.dtype), do, PRECISION, UPCAST)                   # dV += P^T dO
        dp_t = _dot(v, tl.trans(do), PRECISION, UPCAST)                        # dP^T = V dO^T
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST)                    # dK += dS^T Q
    tl.store(DK + b * sg_b + h * sg_h + cols[:, None] * sg_n + dims[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=cd_ok)
    tl.store(DV + b * sg_b + h * sg_h + cols[:, None] * sg_n + dims[None, :],
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
    """Launch shape of the three kernels. fwd_m / fwd_warps: query rows and warps per forward
    program; kv_n / kv_m: keys per dK/dV program / query rows per step of its loop; dq_m / dq_n:
    query rows per dQ program / keys per step (kv_n and dq_n multiples of 32 dividing the padded
    key count); bwd_warps: warps of both backward kernels."""
    fwd_m: int
    fwd_warps: int
    kv_n: int
    kv_m: int
    dq_m: int
    dq_n: int
    bwd_warps: int


def padded_keys(n: int) -> int:
    """Keys per forward tile: N padded to a power of two >= 32."""
    return max(32, 1 << (n - 1).bit_length())


def default_blocks(n: int, hd: int) -> Blocks:
    """Every product with 64 rows per warpgroup of 4 warps, as Hopper's wgmma needs. Forward:
    64 query rows, 8 warps (two warpgroups share each row's keys; with 4 warps ptxas spills at
    N' = 200). Backward: 64 x 64 tiles, 4 warps up to head dim 64 (8 above); keys capped by the
    padded count. Chosen by ptxas' figures for sm_90a (no spills, only wgmma at N' = 200, hd 64,
    bf16: ``tools/benchmark_topk_kernels.py --static``), without GPU timings."""
    keys = min(64, padded_keys(n))
    return Blocks(fwd_m=64, fwd_warps=8, kv_n=keys, kv_m=64, dq_m=64, dq_n=keys,
                  bwd_warps=4 if hd <= 64 else 8)


def _check_blocks(blocks: Blocks, n: int) -> None:
    block_n = padded_keys(n)
    for name in ('fwd_m', 'kv_m', 'dq_m'):
        rows = getattr(blocks, name)
        if rows < 16 or rows & (rows - 1):
            raise ValueError(f'{name}={rows} must be a power of two >= 16')
    for name in ('fwd_warps', 'bwd_warps'):
        warps = getattr(blocks, name)
        if warps < 1 or warps & (warps - 1):
            raise ValueError(f'{name}={warps} must be a power of two')
    for name in ('kv_n', 'dq_n'):
        keys = getattr(blocks, name)
        if keys % 32 or block_n % keys:
            raise ValueError(f'{name}={keys} must be a multiple of 32 dividing {block_n}')


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.stride())[:-1]


def _consts(q: Tensor) -> dict:
    """Constexprs shared by the kernels: head-dim tile, dot precision, interpreter upcast."""
    return dict(BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
                PRECISION='ieee' if q.dtype == torch.float32 else 'tf32',  # fp32: no TF32
                UPCAST=q.dtype == torch.bfloat16 and INTERPRETED)


def first_probe_z(n: int, topk: int) -> float:
    """z0 = Phi^-1(1 - (K - 1/2) / N): the first probe of the K-th search is the row's mean +
    z0 * std, where the (K - 1/2)-th largest of N normal values would lie."""
    return statistics.NormalDist().inv_cdf(1 - (topk - 0.5) / n)


class Launch(NamedTuple):
    """One kernel launch: ``kernel[grid](*args, num_warps=num_warps, **consts)``. The static
    metrics (``mixedae.suite.topk_bench``) compile these same launches for sm_90a."""
    kernel: Callable
    grid: Tuple[int, int]
    args: Tuple
    consts: dict
    num_warps: int

    def __call__(self) -> None:
        with torch.cuda.device(self.args[0].device) if self.args[0].is_cuda else \
                contextlib.nullcontext():
            self.kernel[self.grid](*self.args, num_warps=self.num_warps, **self.consts)


def forward_launch(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, mask: Tensor,
                   topk: int, blocks: Blocks) -> Launch:
    """The forward kernel's launch writing ``out``, ``lse`` and ``mask``."""
    t, h, n, hd = q.shape
    return Launch(_fwd_kernel, (triton.cdiv(n, blocks.fwd_m), t * h),
                  (q, k, v, out, lse, mask, *_strides(q), *_strides(k), *_strides(v),
                   *_strides(out), h, n, hd, topk, hd ** -0.5, first_probe_z(n, topk)),
                  dict(BLOCK_M=blocks.fwd_m, BLOCK_N=padded_keys(n), **_consts(q)),
                  blocks.fwd_warps)


def backward_launches(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor,
                      lse: Tensor, mask: Tensor, dq: Tensor, dk: Tensor, dv: Tensor,
                      delta: Tensor, blocks: Blocks) -> Tuple[Launch, Launch]:
    """The dQ kernel (which also writes ``delta``) and the dK/dV kernel, in launch order; the
    three gradients share one set of strides."""
    t, h, n, hd = q.shape
    common = (*_strides(q), *_strides(k), *_strides(v))
    dq_launch = Launch(
        _dq_kernel, (triton.cdiv(n, blocks.dq_m), t * h),
        (q, k, v, out, grad_out, dq, lse, delta, mask, *common, *_strides(out),
         *_strides(grad_out), *_strides(dq), h, n, hd, hd ** -0.5, mask.shape[-1]),
        dict(KEYS=padded_keys(n), BLOCK_M=blocks.dq_m, BLOCK_N=blocks.dq_n, **_consts(q)),
        blocks.bwd_warps)
    kv_launch = Launch(
        _dkdv_kernel, (triton.cdiv(n, blocks.kv_n), t * h),
        (q, k, v, grad_out, dk, dv, lse, delta, mask, *common, *_strides(grad_out),
         *_strides(dk), h, n, hd, hd ** -0.5, mask.shape[-1]),
        dict(ROWS=triton.cdiv(n, blocks.kv_m) * blocks.kv_m, BLOCK_M=blocks.kv_m,
             BLOCK_N=blocks.kv_n, **_consts(q)),
        blocks.bwd_warps)
    return dq_launch, kv_launch


def triton_forward(q: Tensor, k: Tensor, v: Tensor, topk: int, blocks: Optional[Blocks] = None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """Run the forward kernel on T x H x N x hd q, k, v (unit stride on hd): (out, lse2 (T*H) x N
    base-2 log-sum-exp, mask (T*H) x N x W int32 keep bits)."""
    t, h, n, hd = q.shape
    blocks = blocks or default_blocks(n, hd)
    _check_blocks(blocks, n)
    out = torch.empty((t, h, n, hd), dtype=q.dtype, device=q.device)
    lse = torch.empty((t * h, n), dtype=torch.float32, device=q.device)
    mask = torch.empty((t * h, n, padded_keys(n) // 32), dtype=torch.int32, device=q.device)
    forward_launch(q, k, v, out, lse, mask, topk, blocks)()
    return out, lse, mask


def triton_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, lse: Tensor,
                    mask: Tensor, blocks: Optional[Blocks] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv (contiguous, in q's dtype) of the forward that returned ``out``, ``lse``,
    ``mask``: two kernels, no PyTorch pass over the tensors; deterministic."""
    t, h, n, hd = q.shape
    blocks = blocks or default_blocks(n, hd)
    _check_blocks(blocks, n)
    dq, dk, dv = (torch.empty((t, h, n, hd), dtype=q.dtype, device=q.device) for _ in range(3))
    delta = torch.empty((t * h, n), dtype=torch.float32, device=q.device)
    for launch in backward_launches(q, k, v, _unit_last(out), _unit_last(grad_out), lse, mask,
                                    dq, dk, dv, delta, blocks):
        launch()
    return dq, dk, dv


def kth_search(logits: Tensor, topk: int, block_m: int = 64, warps: int = 8
               ) -> Tuple[Tensor, Tensor]:
    """The forward kernel's K-th search alone on fp32 ``logits`` (R x N, R a multiple of
    ``block_m``, N <= 512): (per-row threshold R, rounds per block of ``block_m`` rows, int32).
    The keep rule is {logits' >= threshold} with logits' = logits with NaN as +inf."""
    r, n = logits.shape
    if r % block_m or n > MAX_TOKENS:
        raise ValueError(f'logits must be R x N with R a multiple of {block_m} and N <= '
                         f'{MAX_TOKENS}, got {tuple(logits.shape)}')
    s = logits.float().contiguous()
    thr = torch.empty(r, dtype=torch.float32, device=s.device)
    rounds = torch.empty(r // block_m, dtype=torch.int32, device=s.device)
    Launch(_kth_kernel, (r // block_m, 1), (s, thr, rounds, n, topk, first_probe_z(n, topk)),
           dict(BLOCK_M=block_m, BLOCK_N=padded_keys(n)), warps)()
    return thr, rounds


# ----------------------------------------------------------------- custom ops and autograd
@torch.library.custom_op('mixedae::topk_attention_fwd', mutates_args=())
def _fwd_op(q: Tensor, k: Tensor, v: Tensor, topk: int) -> Tuple[Tensor, Tensor, Tensor]:
    return triton_forward(q, k, v, topk)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, topk):
    """The outputs as ``triton_forward`` allocates them: contiguous whatever q's strides
    (``empty_like(q)`` would copy the stride order of a qkv slice, and inductor checks it)."""
    t, h, n, _ = q.shape
    return (q.new_empty(q.shape), q.new_empty((t * h, n), dtype=torch.float32),
            q.new_empty((t * h, n, padded_keys(n) // 32), dtype=torch.int32))


@torch.library.custom_op('mixedae::topk_attention_bwd', mutates_args=())
def _bwd_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, lse: Tensor,
            mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return triton_backward(q, k, v, out, grad_out, lse, mask)


@_bwd_op.register_fake
def _bwd_fake(q, k, v, out, grad_out, lse, mask):
    """dq, dk, dv as ``triton_backward`` returns them: contiguous, in q's dtype."""
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


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
