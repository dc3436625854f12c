"""The top-K attention kernels measured (``tools/benchmark_topk_kernels.py`` is the command
line): timings against PyTorch's SDPA on a GPU, one row per launch shape, and static figures of
every kernel compiled for sm_90a (H100) without a GPU.

Timings: for each block-size variant, on one CUDA device and in one process: the forward kernel
alone, the backward alone (the dQ kernel, which also computes delta, and the dK/dV kernel, from
the forward's saved statistics), forward + backward, and, as the yardstick in the same run,
SDPA's forward and forward + backward over all keys. Each time is one call between CUDA events, after warm-up
calls; a row gives min / median / max over the repeats and the medians' ratios to SDPA. Before
timing, each variant's output, gradients and keep bits are checked against the reference.

Static figures (``static_metrics``): each launch compiled as Triton's JIT would for sm_90a
(``triton.compile`` with the JIT's own argument specialization), ptxas' registers and spills,
the shared memory, the resident blocks per SM they allow on an H100 and the tensor-core
instructions in the SASS (Triton's bundled ``cuobjdump``).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mixedae.models.layers.topk_attention import (Blocks, Launch, backward_launches,
                                                  default_blocks, forward_launch, padded_keys,
                                                  topk_attention_reference, topk_keep,
                                                  triton_backward, triton_forward)
from .repo import CONFIGS, Repo
from .tables import markdown_table

NO_CUDA = ('benchmark_topk_kernels needs a CUDA GPU (it times Triton kernels); none is visible: '
           'for a correctness check on CPU run pytest tests/unit/models/test_topk_attention.py')


def variants(n: int, hd: int) -> Dict[str, Blocks]:
    """The default launch shape and one-knob alternatives, named by what they change."""
    base = default_blocks(n, hd)
    block_n = padded_keys(n)
    out = {'default': base}
    warps = 4 if base.fwd_warps == 8 else 8
    out[f'fwd warps {warps}'] = base._replace(fwd_warps=warps)
    if base.fwd_m * block_n <= 64 * 256:
        out['fwd rows 128'] = base._replace(fwd_m=128)
    for bn in (32, 64, 128):
        if bn != base.kv_n and block_n % bn == 0:
            out[f'dkdv keys {bn}'] = base._replace(kv_n=bn)
        if bn != base.dq_n and block_n % bn == 0:
            out[f'dq keys {bn}'] = base._replace(dq_n=bn)
    for bm in (32, 128):
        out[f'dkdv rows {bm}'] = base._replace(kv_m=bm)
        out[f'dq rows {bm}'] = base._replace(dq_m=bm)
    warps = 8 if base.bwd_warps == 4 else 4
    out[f'bwd warps {warps}'] = base._replace(bwd_warps=warps)
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
             f'{repeats} after {warmup} warm-up; launch = (fwd_m, fwd_warps, kv_n, kv_m, '
             'dq_m, dq_n, bwd_warps)')
    return dict(sdpa=sdpa, rows=rows), f'{title}\n\n{timing_table(sdpa, rows)}'


# ------------------------------------------------------------------------------ static metrics
#: per-SM limits of compute capability 9.0 (H100; CUDA C++ Programming Guide, "Technical
#: Specifications per Compute Capability"): registers (allocated per warp in units of 256),
#: shared memory (1 KB of it reserved per resident block), warps and blocks
SM90_LIMITS = dict(registers=65536, register_unit=256, shared=228 * 1024, shared_reserved=1024,
                   warps=64, blocks=32)
PRODUCTION_CONFIG = CONFIGS['mixedae-base']
#: the pretraining ablations whose N' or K differ from the production config's
ABLATION_CONFIGS = tuple(f'configs/pretrain/ablations/mixedae-{name}_vit-base-p16_8xb512-'
                         f'coslr-300e_in1k.py' for name in ('k25', 'k100', 'r2', 'r3'))
STATIC_DTYPES = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)
PTXAS_FIGURES = {
    'registers': r'Used (\d+) registers',
    'stack': r'(\d+) bytes stack frame',
    'spill_stores': r'(\d+) bytes spill stores',
    'spill_loads': r'(\d+) bytes spill loads',
}


class StaticCase(NamedTuple):
    """One row group of the static table: a shape (from a config) in a dtype with a launch."""
    label: str
    n: int
    topk: int
    dtype: str
    blocks: Blocks


def config_shape(path: str) -> Tuple[int, int]:
    """(N', K) of a MixedAE pretraining config (:func:`~.speed.attention_shape`)."""
    from mmengine.config import Config

    from .speed import attention_shape
    shape = attention_shape(Config.fromfile(path).model.backbone)
    return shape.tokens, shape.topk


def static_cases(repo: Repo, hd: int = 64) -> List[StaticCase]:
    """The production shape (bf16; fp16 and fp32, which ``impl='triton'`` takes, too) with
    every launch variant the timing tool has, each ablation shape and a 512-key tile (N' = 300,
    no config has one) with the default launch; configs of the checkout ``repo``."""
    n, topk = config_shape(repo.path(PRODUCTION_CONFIG))
    cases = [StaticCase(f'production {name}', n, topk, 'bf16', blocks)
             for name, blocks in variants(n, hd).items()]
    cases += [StaticCase(f'production default {dt}', n, topk, dt, default_blocks(n, hd))
              for dt in ('fp16', 'fp32')]
    for path in ABLATION_CONFIGS:
        an, ak = config_shape(repo.path(path))
        cases.append(StaticCase(os.path.basename(path).split('_')[0], an, ak, 'bf16',
                                default_blocks(an, hd)))
    cases.append(StaticCase('512-key tile', 300, 75, 'bf16', default_blocks(300, hd)))
    return cases


def case_launches(case: StaticCase, t: int = 64, h: int = 12, hd: int = 64) -> List[Launch]:
    """The forward, dQ and dK/dV launches of ``case`` on meta tensors laid out as in the model
    (q, k, v: slices of one T x N x 3 x H x hd projection)."""
    dtype = STATIC_DTYPES[case.dtype]
    n = case.n
    q, k, v = torch.empty(t, n, 3, h, hd, dtype=dtype, device='meta').permute(2, 0, 3, 1, 4)
    out, grad, dq, dk, dv = (torch.empty(t, h, n, hd, dtype=dtype, device='meta')
                             for _ in range(5))
    lse, delta = (torch.empty(t * h, n, device='meta') for _ in range(2))
    mask = torch.empty(t * h, n, padded_keys(n) // 32, dtype=torch.int32, device='meta')
    return [forward_launch(q, k, v, out, lse, mask, case.topk, case.blocks),
            *backward_launches(q, k, v, out, grad, lse, mask, dq, dk, dv, delta, case.blocks)]


def blocks_per_sm(registers: int, warps: int, shared: int) -> Tuple[int, str]:
    """Resident blocks per SM of a kernel on an H100 and the resource that limits it."""
    lim = SM90_LIMITS
    unit = lim['register_unit']
    per_warp = -(-registers * 32 // unit) * unit
    bounds = dict(registers=lim['registers'] // per_warp // warps,
                  shared=lim['shared'] // (shared + lim['shared_reserved']),
                  warps=lim['warps'] // warps, blocks=lim['blocks'])
    limit = min(bounds, key=bounds.get)
    return bounds[limit], limit


def compile_sm90(launch: Launch) -> Dict[str, object]:
    """Compile one launch for sm_90a as Triton's JIT would (its own argument specialization:
    pointers and integers divisible by 16 get ``tt.divisibility=16``; meta tensors count as
    16-byte aligned) and read ptxas' figures (``-v``), the shared memory and the tensor-core
    instructions (HGMMA = wgmma, HMMA = mma.sync) in the SASS. Needs triton imported without
    TRITON_INTERPRET."""
    import contextlib as _contextlib
    import io
    import re
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    from triton.tools.disasm import get_sass
    fn = launch.kernel
    target = GPUTarget('cuda', 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.consts, num_warps=launch.num_warps)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound,
                                                          specialization, options)
    log = io.StringIO()
    with knobs.compilation.scope(), knobs.nvidia.scope():
        knobs.compilation.always_compile = True       # a cached kernel would skip ptxas' log
        knobs.nvidia.dump_ptxas_log = True            # ptxas -v, printed to stdout
        with _contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                      target=target, options=options.__dict__)
    text = log.getvalue()
    figures = {}
    for name, pattern in PTXAS_FIGURES.items():
        found = re.search(pattern, text)
        if found is None:
            raise RuntimeError(f'no "{pattern}" in the ptxas log of {fn.__name__}:\n{text}')
        figures[name] = int(found.group(1))
    sass = get_sass(compiled.asm['cubin'])
    figures.update(shared=compiled.metadata.shared, warps=launch.num_warps,
                   hgmma=len(re.findall(r'\bHGMMA\b', sass)),
                   hmma=len(re.findall(r'\bHMMA\b', sass)),
                   ptx_wgmma=compiled.asm['ptx'].count('wgmma.mma_async'))
    figures['blocks_per_sm'], figures['limit'] = blocks_per_sm(
        figures['registers'], launch.num_warps, figures['shared'])
    return figures


def _specialization(arg: object) -> Tuple:
    """What the JIT specializes an argument on: a tensor's dtype, an int's being 1 or a
    multiple of 16, a float's type."""
    if isinstance(arg, torch.Tensor):
        return ('tensor', str(arg.dtype))
    if isinstance(arg, int):
        return ('int', arg == 1, arg % 16 == 0)
    return (type(arg).__name__,)


def static_rows(cases: Sequence[StaticCase]) -> List[Dict[str, object]]:
    """Every kernel of every case compiled for sm_90a (``compile_sm90``), one dict per kernel;
    identical compilations (same specialization) are compiled once."""
    done: Dict[str, Dict[str, object]] = {}
    rows = []
    for case in cases:
        for launch in case_launches(case):
            key = repr((launch.kernel.__name__, [_specialization(a) for a in launch.args],
                        sorted(launch.consts.items()), launch.num_warps))
            if key not in done:
                done[key] = compile_sm90(launch)
            rows.append(dict(case=case.label, kernel=launch.kernel.__name__.strip('_'),
                             dtype=case.dtype, n=case.n, topk=case.topk,
                             tile=f'{launch.consts["BLOCK_M"]} x {launch.consts["BLOCK_N"]}',
                             **done[key]))
    return rows


STATIC_WORKER = ('import json, sys; from mixedae.suite.topk_bench import StaticCase, Blocks, '
                 'static_rows; cases = [StaticCase(*c[:4], Blocks(*c[4])) for c in '
                 'json.load(sys.stdin)]; sys.stdout.write(json.dumps(static_rows(cases)))')


def static_metrics(cases: Sequence[StaticCase], timeout: float = 1800) -> List[Dict[str, object]]:
    """``static_rows`` in a fresh interpreter without TRITON_INTERPRET (under it the kernels
    are interpreted functions, which do not compile)."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, '-c', STATIC_WORKER], input=json.dumps(cases),
                            env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f'the sm_90a compilation failed:\n{result.stderr[-4000:]}')
    return json.loads(result.stdout)


def static_table(rows: Sequence[Dict[str, object]]) -> str:
    """Markdown: one row per compiled kernel."""
    header = ['case', 'kernel', 'dtype', "N'", 'K', 'tile (queries x keys)', 'warps', 'registers',
              'spill stores / loads (B)', 'stack (B)', 'shared (B)', 'blocks / SM (limit)',
              'HGMMA', 'HMMA']
    table = [dict(zip(header, [
        r['case'], r['kernel'], r['dtype'], str(r['n']), str(r['topk']), r['tile'],
        str(r['warps']), str(r['registers']), f'{r["spill_stores"]} / {r["spill_loads"]}',
        str(r['stack']), str(r['shared']), f'{r["blocks_per_sm"]} ({r["limit"]})',
        str(r['hgmma']), str(r['hmma'])])) for r in rows]
    return markdown_table(table, header)
