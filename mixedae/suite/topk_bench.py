"""Per-kernel timings of the top-K attention kernels against PyTorch's SDPA, one row per launch
shape (``tools/benchmark_topk_kernels.py`` is its command line).

For each block-size variant it times, on one CUDA device and in one process: the forward kernel
alone, the backward alone (delta, the fused kernel and the dQ reduction, from the forward's saved
statistics), forward + backward, and, as the yardstick in the same run, SDPA's forward and
forward + backward over all keys. Each time is one call between CUDA events, after warm-up
calls; a row gives min / median / max over the repeats and the medians' ratios to SDPA. Before
timing, each variant's output, gradients and keep bits are checked against the reference.
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mixedae.models.layers.topk_attention import (Blocks, default_blocks, padded_keys,
                                                  topk_attention_reference, topk_keep,
                                                  triton_backward, triton_forward)
from .tables import markdown_table

NO_CUDA = ('benchmark_topk_kernels needs a CUDA GPU (it times Triton kernels); none is visible: '
           'for a correctness check on CPU run pytest tests/unit/models/test_topk_attention.py')


def variants(n: int, hd: int) -> Dict[str, Blocks]:
    """The default launch shape and one-knob alternatives, named by what they change."""
    base = default_blocks(n, hd)
    block_n = padded_keys(n)
    out = {'default': base}
    for m in (16, 32, 64, 128):
        if m != base.fwd_m and m * block_n <= 128 * 256:
            out[f'fwd rows {m}'] = base._replace(fwd_m=m)
    for bn in (32, 64, 128):
        if bn != base.bwd_n and block_n % bn == 0:
            out[f'bwd keys {bn}'] = base._replace(bwd_n=bn)
    for bm in (16, 64):
        out[f'bwd rows {bm}'] = base._replace(bwd_m=bm)
    warps = 8 if base.bwd_warps == 4 else 4
    out[f'bwd warps {warps}'] = base._replace(bwd_warps=warps)
    out['atomic dQ'] = base._replace(atomic_dq=True)
    return out


def inputs(t: int, h: int, n: int, hd: int, dtype: torch.dtype, device: str, seed: int = 0
           ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k, v (T x H x N x hd, as a qkv projection slices them: non-contiguous) and dO."""
    g = torch.Generator(device).manual_seed(seed)
    qkv = torch.randn(t, n, 3, h, hd, generator=g, device=device).to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v, torch.randn(t, h, n, hd, generator=g, device=device).to(dtype)


def check(q: Tensor, k: Tensor, v: Tensor, grad: Tensor, topk: int, blocks: Blocks
          ) -> Dict[str, float]:
    """Largest |kernel - reference| of out, dq, dk, dv (relative to the reference's largest
    magnitude) and the fraction of (query, key) keep decisions that differ."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    ref, _ = topk_attention_reference(q, k, v, topk)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    with torch.no_grad():
        out, lse, words = triton_forward(q, k, v, topk, blocks)
        grads = triton_backward(q, k, v, out, grad, lse, words, blocks)
        bits = (words.unsqueeze(-1) >> torch.arange(32, device=words.device, dtype=torch.int32))
        keep = (bits & 1).flatten(-2)[..., :q.shape[2]].bool().view(q.shape[:3] + q.shape[2:3])
        logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
        errors = {name: ((a.float() - b.float()).abs().max()
                         / b.float().abs().max().clamp(min=1)).item()
                  for name, a, b in zip(('out', 'dq', 'dk', 'dv'), (out, *grads), (ref, *ref_grads))}
        errors['keep mismatch'] = (keep != topk_keep(logits, topk)).float().mean().item()
    return errors


def cuda_times(fn: Callable[[], object], warmup: int, repeats: int) -> List[float]:
    """Microseconds of each of ``repeats`` calls of ``fn`` (CUDA events), after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return times


def min_median_max(times: Sequence[float]) -> Dict[str, float]:
    """The timings' minimum, median and maximum."""
    return dict(min=min(times), median=statistics.median(times), max=max(times))


def fmt(s: Dict[str, float]) -> str:
    """'median (min-max)' microseconds."""
    return f'{s["median"]:.0f} ({s["min"]:.0f}-{s["max"]:.0f})'


def sdpa_times(q: Tensor, k: Tensor, v: Tensor, grad: Tensor, warmup: int, repeats: int
               ) -> Dict[str, Dict[str, float]]:
    """SDPA over all keys: forward, forward + backward."""
    qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))

    def fwd_bwd():
        torch.autograd.grad(F.scaled_dot_product_attention(qg, kg, vg), (qg, kg, vg), grad)

    with torch.no_grad():
        fwd = cuda_times(lambda: F.scaled_dot_product_attention(q, k, v), warmup, repeats)
    both = cuda_times(fwd_bwd, warmup, repeats)
    return dict(fwd=min_median_max(fwd), fwd_bwd=min_median_max(both))


def kernel_times(q: Tensor, k: Tensor, v: Tensor, grad: Tensor, topk: int, blocks: Blocks,
                 warmup: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """The kernels with ``blocks``: forward, backward (from saved statistics), both."""
    with torch.no_grad():
        out, lse, words = triton_forward(q, k, v, topk, blocks)
        fwd = cuda_times(lambda: triton_forward(q, k, v, topk, blocks), warmup, repeats)
        bwd = cuda_times(lambda: triton_backward(q, k, v, out, grad, lse, words, blocks),
                         warmup, repeats)

        def fwd_bwd():
            o, l_, w = triton_forward(q, k, v, topk, blocks)
            triton_backward(q, k, v, o, grad, l_, w, blocks)

        both = cuda_times(fwd_bwd, warmup, repeats)
    return dict(fwd=min_median_max(fwd), bwd=min_median_max(bwd), fwd_bwd=min_median_max(both))


def timing_table(sdpa: Dict[str, Dict[str, float]], rows: Dict[str, Dict]) -> str:
    """Markdown: one row per variant (µs as 'median (min-max)'), ratios of medians to SDPA."""
    header = ['variant', 'launch', 'fwd µs', 'bwd µs', 'fwd+bwd µs', 'fwd / SDPA',
              'fwd+bwd / SDPA', 'max rel. error', 'keep mismatch']
    table = [dict(zip(header, ['SDPA, all keys', '–', fmt(sdpa['fwd']), '–',
                               fmt(sdpa['fwd_bwd']), '1.00', '1.00', '–', '–']))]
    for name, r in rows.items():
        t, e = r['times'], r['errors']
        table.append(dict(zip(header, [
            name, str(tuple(r['blocks'])), fmt(t['fwd']), fmt(t['bwd']), fmt(t['fwd_bwd']),
            f'{t["fwd"]["median"] / sdpa["fwd"]["median"]:.2f}',
            f'{t["fwd_bwd"]["median"] / sdpa["fwd_bwd"]["median"]:.2f}',
            f'{max(v for n, v in e.items() if n != "keep mismatch"):.1e}',
            f'{e["keep mismatch"]:.1e}'])))
    return markdown_table(table, header)


def benchmark_topk_kernels(t: int, h: int, n: int, hd: int, topk: int,
                           dtype: torch.dtype = torch.bfloat16, warmup: int = 10,
                           repeats: int = 50, names: Sequence[str] = ()) -> Tuple[Dict, str]:
    """Check and time each variant (all, or those in ``names``) on T x H x N x hd inputs with
    K = ``topk`` on the current CUDA device (the tool's defaults: the MixedAE ViT-B config's
    shape, ``speed.homologous_attention_shape``); (results, markdown report). RuntimeError
    without CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError(NO_CUDA)
    q, k, v, grad = inputs(t, h, n, hd, dtype, 'cuda')
    sdpa = sdpa_times(q, k, v, grad, warmup, repeats)
    rows = {}
    for name, blocks in variants(n, hd).items():
        if names and name not in names:
            continue
        rows[name] = dict(blocks=blocks, errors=check(q, k, v, grad, topk, blocks),
                          times=kernel_times(q, k, v, grad, topk, blocks, warmup, repeats))
    title = (f'{torch.cuda.get_device_name()}, torch {torch.__version__}: T={t} x H={h} x '
             f'N={n} x hd={hd}, K={topk}, {str(dtype)[6:]}; µs per call, median (min-max) of '
             f'{repeats} after {warmup} warm-up; launch = (fwd_m, bwd_m, bwd_n, bwd_warps, '
             'atomic_dq)')
    return dict(sdpa=sdpa, rows=rows), f'{title}\n\n{timing_table(sdpa, rows)}'
