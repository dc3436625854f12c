"""Speed benchmarks of a training step on any device: time, peak memory, FLOPs and MFU.

``tools/benchmark_pretrain.py`` (MAE vs naive mixing vs MixedAE), ``tools/benchmark_backbone.py``
(each transfer protocol's backbone vs timm's fused ViT of the same size at the same input) and
``tools/gpu_check.py`` are argument parsers over this module. Configs are read from the
checkout they pass (a :class:`~mixedae.suite.repo.Repo`).

Measurements run one after another in the calling process, so that start-up (imports, CUDA
context) is paid once: each builds its model, times it and drops it, and the next starts after
:func:`release_memory` (garbage collection, ``torch.cuda.empty_cache()``; on CPU glibc's
``malloc_trim``). Peak memory is what the timed steps reach above what the process held before
the model was built: the CUDA allocator's peak (reset after the warm-up, so each measurement's
peak is its own), or on CPU the peak resident set size (Linux VmHWM, reset after the warm-up).
On CPU that is less isolated than a fresh process (memory the allocator kept from an earlier
measurement can be reused unseen), which the report titles say; a spawned process per
measurement cost about 25 s of start-up on the H100 machine, more than the GPU check can pay.
Times: ``repeats`` forward + backward steps after ``warmup`` steps, reported as min / median /
max; a ratio of two medians gets a warning (:func:`ratio_warning`) when it rests on fewer than
3 repeats or when the timings spread wider than the ratio differs from 1. FLOPs are counted by
torch's ``FlopCounterMode`` over one more forward + backward step: matrix products,
convolutions and scaled-dot-product attention (work inside custom kernels is not seen).
A pretraining step leaves ``hr_acc`` off unless asked (``hr_acc=True``), as training does on
the iterations it does not log.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import inspect
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
from torch.utils import flop_counter

from mixedae.utils.errors import DeviceUnavailableError, InvalidInputError
from .repo import Repo
from .tables import markdown_table

PRETRAIN_METHODS = ('mae', 'naivemix', 'mixedae')
#: pretraining architectures (the MixedAE config of each size; a method's knobs come from its
#: ViT-B config)
PRETRAIN_ARCHS = ('tiny', 'small', 'base', 'large')
#: the knobs that make a method (see configs/pretrain/{mae,naivemix}_*.py); the rest is the arch's
METHOD_KEYS = (('backbone', 'group_size'), ('backbone', 'attn_mode'),
               ('backbone', 'use_segment_embed'), ('backbone', 'homologous_layers'),
               ('backbone', 'topk'), ('backbone', 'tied_qk_init'), ('mix_mode',), ('mask_ratio',),
               ('contrast_weight',))
#: the transfer protocols (config names ``<protocol>-<scale>`` in :data:`~.repo.CONFIGS`)
PROTOCOLS = ('ade20k', 'coco_a', 'vitdet')
#: transfer scales: ``base`` the ViT-B configs, ``tiny`` the tiny CPU configs
SCALES = ('base', 'tiny')
BACKBONE_MODELS = ('timm', 'config')
TIME_HEADER = 's / step: min / median / max'


# ------------------------------------------------------------------ devices
def cpu_model_name(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The 'model name' line of ``cpuinfo``; ``platform.processor()`` where there is none."""
    if os.path.isfile(cpuinfo):
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'model name':
                return value.strip()
    return platform.processor() or platform.machine()


def usable_device(device: str) -> torch.device:
    """``--device`` as a torch device; refused in one line when torch does not know the name
    or this machine lacks the device (no CUDA device visible, an index past the last one)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InvalidInputError(f'--device {device!r}: not a torch device; give cpu, cuda or '
                                'cuda:N') from None
    if dev.type != 'cuda':
        return dev
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise DeviceUnavailableError(
            f'--device {device}: no CUDA device visible to torch {torch.__version__} (CUDA '
            f'build: {torch.version.cuda}); on this machine benchmark with --device cpu')
    if dev.index is not None and dev.index >= count:
        raise DeviceUnavailableError(f'--device {device}: torch sees {count} CUDA devices '
                                     f'(cuda:0 to cuda:{count - 1})')
    return dev


def device_description(device: str) -> str:
    """Card name and torch / CUDA versions on GPU; CPU model and core count on CPU."""
    dev = torch.device(device)
    if dev.type == 'cuda':
        return (f'{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, '
                f'CUDA {torch.version.cuda}')
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return (f'{cpu_model_name()}, {cores} cores ({torch.get_num_threads()} torch threads), '
            f'torch {torch.__version__}')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (Linux), in MiB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024                         # kB -> MiB
    raise RuntimeError(f'/proc/self/status has no {field} line')


def current_rss_mib() -> float:
    """Resident set size of this process now."""
    return _status_mib('VmRSS')


def reset_peak_rss() -> None:
    """Restart the peak RSS (VmHWM) from the current RSS (Linux >= 4.0)."""
    Path('/proc/self/clear_refs').write_text('5')


def peak_rss_mib() -> float:
    """Peak resident set size since the last ``reset_peak_rss``."""
    return _status_mib('VmHWM')


# -------------------------------------------------------------------- FLOPs
def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)


def _sdpa_cpu_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


#: torch has formulas for the CUDA attention kernels but not for the CPU one
_CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        _sdpa_cpu_backward_flops,
}


def count_flops(step: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``step`` (a multiply-add counts 2)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_SDPA_FLOPS) as counter:
        step()
    return counter.get_total_flops()


# ------------------------------------------------------------------ memory
@dataclass(frozen=True)
class MemoryReader:
    """A device's memory in MiB: ``current()``, ``peak()`` since the last ``reset_peak()``."""
    current: Callable[[], float]
    peak: Callable[[], float]
    reset_peak: Callable[[], None]


def memory_reader(device: torch.device) -> MemoryReader:
    """The CUDA allocator's counters on GPU; the process's RSS and peak RSS on CPU."""
    if device.type == 'cuda':
        return MemoryReader(lambda: torch.cuda.memory_allocated(device) / 2 ** 20,
                            lambda: torch.cuda.max_memory_allocated(device) / 2 ** 20,
                            lambda: torch.cuda.reset_peak_memory_stats(device))
    return MemoryReader(current_rss_mib, peak_rss_mib, reset_peak_rss)


def release_memory(device: torch.device) -> None:
    """Free what earlier measurements left: garbage, the CUDA cache, and on CPU the freed heap
    returned to the system where glibc allows (``malloc_trim``)."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        return
    libc = ctypes.util.find_library('c')
    if libc and hasattr(ctypes.CDLL(libc), 'malloc_trim'):
        ctypes.CDLL(libc).malloc_trim(0)


def memory_title(device: str) -> str:
    return ('peak GPU memory (MiB)' if torch.device(device).type == 'cuda'
            else 'peak RSS growth (MiB)')


def isolation_note(device: str) -> str:
    """What the report title says about how isolated the memory numbers are."""
    if torch.device(device).type == 'cuda':
        return 'each CUDA peak its own (cache emptied, peak reset between measurements)'
    return 'CPU memory measured in one process, less isolated than a fresh process per row'


# ------------------------------------------------------------------ timing
def time_step(step: Callable[[], object], device: torch.device, warmup: int, repeats: int,
              memory: MemoryReader, baseline_mib: float = 0.) -> Dict:
    """Times of ``repeats`` calls after ``warmup`` calls (median, min, max) and the peak
    memory (MiB) of the timed calls above ``baseline_mib``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f'need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}')
    for _ in range(warmup):
        step()
    synchronize(device)
    memory.reset_peak()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return dict(step_s=statistics.median(times), min_s=min(times), max_s=max(times),
                times=times, peak_mib=memory.peak() - baseline_mib)


def spread(times: Sequence[float]) -> float:
    """(max - min) / median of the timings."""
    return (max(times) - min(times)) / statistics.median(times)


def timing_cell(result: Dict) -> str:
    """'min / median / max' seconds of a measurement."""
    return f'{result["min_s"]:.4f} / {result["step_s"]:.4f} / {result["max_s"]:.4f}'


def ratio_warning(name: str, ratio: float, *measured: Dict) -> Optional[str]:
    """Why the time ratio ``name`` of ``measured`` medians is not to be trusted: fewer than 3
    repeats, or a spread ((max - min) / median) of either wider than |ratio - 1|; None if
    neither."""
    repeats = min(len(m['times']) for m in measured)
    if repeats < 3:
        return f'{name} {ratio:.2f}x rests on {repeats} repeat(s), fewer than 3'
    widest = max(spread(m['times']) for m in measured)
    if widest > abs(ratio - 1):
        return (f'{name} {ratio:.2f}x is noisy: timings spread {100 * widest:.0f} % '
                f'(max - min) / median, wider than the {100 * abs(ratio - 1):.0f} % '
                'difference')
    return None


def report(title: str, table: str, warnings: Sequence[Optional[str]]) -> str:
    """A benchmark's markdown report: title, table, one 'warning:' line each."""
    lines = [f'warning: {w}' for w in warnings if w]
    return '\n\n'.join([title, table, *(['\n'.join(lines)] if lines else [])])


# --------------------------------------------------------------- pretraining
def pretrain_model_config(repo: Repo, method: str, arch: str):
    """The model config of ``arch`` (tiny/small/base/large) with the knobs of ``method``."""
    if method not in PRETRAIN_METHODS:
        raise ValueError(f'unknown method {method!r}; choose from {PRETRAIN_METHODS}')
    if arch not in PRETRAIN_ARCHS:
        raise ValueError(f'unknown arch {arch!r}; choose from {PRETRAIN_ARCHS}')
    cfg = repo.load(f'mixedae-{arch}').model
    knobs = repo.load(f'{method}-base').model
    for path in METHOD_KEYS:
        src, dst = knobs, cfg
        for key in path[:-1]:
            src, dst = src[key], dst[key]
        dst[path[-1]] = src[path[-1]]
    cfg.pop('batch_size', None)
    return cfg


class AttentionShape(NamedTuple):
    """One top-K attention call of a MixedAE encoder, per mixed sequence: heads, tokens (N
    patches + G class tokens), head dim and K."""
    heads: int
    tokens: int
    head_dim: int
    topk: int


def attention_shape(backbone) -> AttentionShape:
    """The top-K attention shape of a ``mixedae.MixedViT`` backbone config; K is its ``topk``,
    or when None the encoder's default (``default_topk``: N/G + 1)."""
    from timm.layers import to_2tuple

    from mixedae.models.backbones.mixed_vit import default_topk

    b = backbone
    rows, cols = (s // p for s, p in zip(to_2tuple(b.img_size), to_2tuple(b.patch_size)))
    n, g = rows * cols, b.group_size
    topk = default_topk(n, g) if b.get('topk') is None else b.topk
    return AttentionShape(b.num_heads, n + g, b.embed_dim // b.num_heads, topk)


def homologous_attention_shape(repo: Repo, arch: str = 'base') -> AttentionShape:
    """:func:`attention_shape` of the MixedAE pretraining config of ``arch``."""
    return attention_shape(pretrain_model_config(repo, 'mixedae', arch).backbone)


def measure_pretrain(repo: Repo, method: str, arch: str = 'base', batch: int = 16,
                     device: str = 'cpu', amp: bool = False, warmup: int = 1,
                     repeats: int = 3, hr_acc: bool = False) -> Dict:
    """Forward + backward of one method's pretraining loss on random images. ``hr_acc``:
    compute the top-K layers' ``hr_acc`` on every step (unpacking their keep masks); off by
    default, as in training, which computes it only on the iterations it logs
    (``mixedae.HrAccScheduleHook``)."""
    from mmengine.registry import DefaultScope

    from mixedae.registry import MODELS

    dev = torch.device(device)
    cfg = pretrain_model_config(repo, method, arch)
    release_memory(dev)
    memory = memory_reader(dev)
    baseline = memory.current()                   # after the config's imports, before the model
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(cfg).to(dev).train()
    model.set_hr_acc(hr_acc)
    if batch % model.group_size:
        raise ValueError(f'batch {batch} is not divisible by the group size {model.group_size}')
    images = torch.randn(batch, 3, *model.backbone.patch_embed.img_size, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            losses = model.loss(images)
            loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        loss.backward()
        model.zero_grad(set_to_none=True)

    flops = count_flops(step)
    result = time_step(step, dev, warmup, repeats, memory, baseline)
    return dict(method=method, flops=flops, images_per_s=batch / result['step_s'], **result)


def pretrain_table(results: Sequence[Dict], device: str,
                   peak_tflops: Optional[float] = None) -> str:
    """Markdown: time (min / median / max), images/s, TFLOP per step, TFLOP/s, [MFU,] memory,
    median time vs MAE."""
    base = next((r for r in results if r['method'] == 'mae'), None)
    header = ['method', TIME_HEADER, 'images / s', 'TFLOP / step', 'TFLOP/s']
    header += ['MFU'] if peak_tflops else []
    header += [memory_title(device), 'time vs MAE']
    rows = []
    for r in results:
        achieved = r['flops'] / r['step_s'] / 1e12
        row = {'method': r['method'], TIME_HEADER: timing_cell(r),
               'images / s': f'{r["images_per_s"]:.1f}', 'TFLOP / step': f'{r["flops"] / 1e12:.4g}',
               'TFLOP/s': f'{achieved:.3g}', memory_title(device): f'{r["peak_mib"]:.0f}',
               'time vs MAE': f'{r["step_s"] / base["step_s"]:.3f}' if base else 'n/a'}
        if peak_tflops:
            row['MFU'] = f'{100 * achieved / peak_tflops:.3g} %'
        rows.append(row)
    return markdown_table(rows, header)


def pretrain_warnings(results: Sequence[Dict]) -> List[Optional[str]]:
    """:func:`ratio_warning` of each method's time vs MAE's."""
    base = next((r for r in results if r['method'] == 'mae'), None)
    return [ratio_warning(f'{r["method"]} vs mae', r['step_s'] / base['step_s'], r, base)
            for r in results if base and r is not base]


def benchmark_pretrain(repo: Repo, methods: Sequence[str] = PRETRAIN_METHODS,
                       arch: str = 'base', batch: int = 16, device: str = 'cpu',
                       amp: bool = False, warmup: int = 1, repeats: int = 3,
                       peak_tflops: Optional[float] = None, hr_acc: bool = False):
    """Measure each method, one after another in this process; (results, markdown report)."""
    usable_device(device)
    results = [measure_pretrain(repo, m, arch, batch, device, amp, warmup, repeats, hr_acc)
               for m in methods]
    title = (f'ViT {arch}, batch {batch}, {"bf16 autocast" if amp else "fp32"}, '
             f'hr_acc {"on every step" if hr_acc else "off"}, '
             f'{device_description(device)}; {repeats} timed steps after {warmup} warm-up; '
             f'{isolation_note(device)}')
    return results, report(title, pretrain_table(results, device, peak_tflops),
                           pretrain_warnings(results))


# ----------------------------------------------------------------- backbones
def backbone_config(repo: Repo, protocol: str, scale: str = 'base',
                    img_size: Optional[int] = None):
    """The protocol config's ``model.backbone`` (no checkpoint), sized for ``img_size`` input
    (default: the config's training size)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown protocol {protocol!r}; choose from {PROTOCOLS}')
    if scale not in SCALES:
        raise ValueError(f'unknown scale {scale!r}; choose from {SCALES}')
    cfg = repo.load(f'{protocol}-{scale}', import_modules=False).model.backbone
    cfg.pop('init_cfg', None)
    if img_size:
        cfg.img_size = (img_size, img_size)
    return cfg


def yardstick_kwargs(cfg) -> Dict:
    """timm ``VisionTransformer`` arguments of the same size as a ``mixedae.ViT`` config
    (unset options take ``mixedae.ViT``'s defaults)."""
    from mixedae.models.backbones.vit import ViT
    bound = inspect.signature(ViT).bind(**{k: v for k, v in cfg.items() if k != 'type'})
    bound.apply_defaults()
    a = bound.arguments
    size = a['img_size']
    return dict(img_size=tuple(size) if isinstance(size, (list, tuple)) else size,
                patch_size=a['patch_size'], embed_dim=a['embed_dim'], depth=a['depth'],
                num_heads=a['num_heads'], mlp_ratio=a['mlp_ratio'], qkv_bias=a['qkv_bias'],
                class_token=a['with_cls_token'],
                pos_embed='learn' if a['use_abs_pos_embed'] else 'none',
                final_norm=a['final_norm'], drop_path_rate=a['drop_path_rate'], num_classes=0,
                global_pool='')


def build_backbone(model: str, cfg) -> torch.nn.Module:
    """``config``: ``mixedae.ViT`` as the config builds it; ``timm``: the yardstick (fused
    attention, no relative position bias, gradient checkpointing as the config)."""
    if model == 'config':
        from mixedae.registry import MODELS
        return MODELS.build(cfg)
    if model != 'timm':
        raise ValueError(f'unknown backbone model {model!r}; choose from {BACKBONE_MODELS}')
    from timm.models.vision_transformer import VisionTransformer
    vit = VisionTransformer(**yardstick_kwargs(cfg))
    for block in vit.blocks:
        block.attn.fused_attn = True
    vit.set_grad_checkpointing(bool(cfg.get('with_cp', False)))
    return vit


def backbone_loss(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A scalar from every output: the mean of each level (config) or of the tokens (timm)."""
    if hasattr(model, 'forward_features'):
        return model.forward_features(images).float().mean()
    return sum(out.float().mean() for out in model(images))


def measure_backbone(repo: Repo, protocol: str, model: str = 'config', scale: str = 'base',
                     img_size: Optional[int] = None, batch: int = 2, device: str = 'cpu',
                     amp: bool = False, warmup: int = 1, repeats: int = 3) -> Dict:
    """Forward + backward of one backbone on random images."""
    dev = torch.device(device)
    cfg = backbone_config(repo, protocol, scale, img_size)
    release_memory(dev)
    memory = memory_reader(dev)
    baseline = memory.current()                   # after the config's imports, before the model
    torch.manual_seed(0)
    net = build_backbone(model, cfg).to(dev).train()
    h, w = cfg.img_size if isinstance(cfg.img_size, (list, tuple)) else (cfg.img_size,) * 2
    images = torch.randn(batch, 3, h, w, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = backbone_loss(net, images)
        loss.backward()
        net.zero_grad(set_to_none=True)

    result = time_step(step, dev, warmup, repeats, memory, baseline)
    return dict(protocol=protocol, model=model, input=f'{h}x{w}', batch=batch,
                images_per_s=batch / result['step_s'], **result)


def backbone_table(results: Sequence[Dict], device: str) -> str:
    """Markdown: one row per (protocol, model), ratios to the protocol's timm row."""
    mem = memory_title(device)
    header = ['protocol', 'backbone', 'input', 'batch', TIME_HEADER, 'img / s', mem,
              'time vs timm', 'memory vs timm']
    yardsticks = {r['protocol']: r for r in results if r['model'] == 'timm'}
    rows = []
    for r in results:
        ref = yardsticks.get(r['protocol'])
        rows.append({
            'protocol': r['protocol'],
            'backbone': 'timm ViT (fused, no rel-pos)' if r['model'] == 'timm' else 'mixedae.ViT',
            'input': r['input'], TIME_HEADER: timing_cell(r), 'batch': str(r['batch']),
            'img / s': f'{r["images_per_s"]:.1f}', mem: f'{r["peak_mib"]:.0f}',
            'time vs timm': f'{r["step_s"] / ref["step_s"]:.2f}' if ref else 'n/a',
            'memory vs timm': (f'{r["peak_mib"] / ref["peak_mib"]:.2f}'
                               if ref and ref['peak_mib'] > 0 else 'n/a')})
    return markdown_table(rows, header)


def backbone_warnings(results: Sequence[Dict]) -> List[Optional[str]]:
    """:func:`ratio_warning` of each config backbone's time vs its protocol's yardstick."""
    yardsticks = {r['protocol']: r for r in results if r['model'] == 'timm'}
    return [ratio_warning(f'{r["protocol"]} backbone vs timm',
                          r['step_s'] / yardsticks[r['protocol']]['step_s'], r,
                          yardsticks[r['protocol']])
            for r in results if r['model'] == 'config' and r['protocol'] in yardsticks]


def benchmark_backbones(repo: Repo, protocols: Sequence[str] = PROTOCOLS, scale: str = 'base',
                        img_size: Optional[int] = None, batch: int = 2, device: str = 'cpu',
                        amp: bool = False, warmup: int = 1, repeats: int = 3):
    """The yardstick, then the config's backbone, per protocol, one after another in this
    process; (results, markdown report)."""
    usable_device(device)
    results = [measure_backbone(repo, protocol, model, scale, img_size, batch, device, amp,
                                warmup, repeats)
               for protocol in protocols for model in BACKBONE_MODELS]
    title = (f'{scale} backbones, fwd + bwd, {"bf16 autocast" if amp else "fp32"}, '
             f'{device_description(device)}; {repeats} timed steps after {warmup} warm-up; '
             f'{isolation_note(device)}')
    return results, report(title, backbone_table(results, device), backbone_warnings(results))
