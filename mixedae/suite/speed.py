"""Speed benchmarks of a training step on any device: time, peak memory, FLOPs and MFU.

``tools/benchmark_pretrain.py`` (MAE vs naive mixing vs MixedAE), ``tools/benchmark_backbone.py``
(each transfer protocol's backbone vs timm's fused ViT of the same size at the same input) and
``tools/gpu_check.py`` are argument parsers over this module. Configs are read from the
repository ``root`` they pass (:class:`~mixedae.suite.repo.Repo`).

Each measurement runs in a fresh spawned process, so that its peak memory is its own (freed
memory of an earlier model would otherwise be reused unseen): the CUDA allocator's peak over
the timed steps, or on CPU the peak resident set size over the timed steps (Linux VmHWM, reset
after the warm-up) above the RSS the process had before the model was built. Times are the
median of ``repeats`` forward + backward steps after ``warmup`` steps. FLOPs are counted by
torch's ``FlopCounterMode`` over one more forward + backward step: matrix products,
convolutions and scaled-dot-product attention (work inside custom kernels is not seen).
"""
from __future__ import annotations

import inspect
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch.utils import flop_counter

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


# ------------------------------------------------------------------ devices
def cpu_model_name(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The 'model name' line of ``cpuinfo``; ``platform.processor()`` where there is none."""
    if os.path.isfile(cpuinfo):
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'model name':
                return value.strip()
    return platform.processor() or platform.machine()


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


# ------------------------------------------------------------------ timing
def time_step(step: Callable[[], object], device: torch.device, warmup: int, repeats: int,
              rss_before_mib: float = 0.) -> Dict:
    """Median time of ``repeats`` calls after ``warmup`` calls, and the peak memory (MiB) of
    the timed calls: CUDA allocator peak, or on CPU the peak RSS above ``rss_before_mib``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f'need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}')
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = peak_rss_mib() - rss_before_mib
    return dict(step_s=statistics.median(times), times=times, peak_mib=peak)


def run_isolated(fn: Callable[..., Dict], **kwargs) -> Dict:
    """``fn(**kwargs)`` in a fresh spawned process; its exceptions are re-raised here."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
        return pool.submit(fn, **kwargs).result()


def memory_title(device: str) -> str:
    return ('peak GPU memory (MiB)' if torch.device(device).type == 'cuda'
            else 'peak RSS growth (MiB)')


# --------------------------------------------------------------- pretraining
def pretrain_model_config(root: str, method: str, arch: str):
    """The model config of ``arch`` (tiny/small/base/large) with the knobs of ``method``."""
    if method not in PRETRAIN_METHODS:
        raise ValueError(f'unknown method {method!r}; choose from {PRETRAIN_METHODS}')
    if arch not in PRETRAIN_ARCHS:
        raise ValueError(f'unknown arch {arch!r}; choose from {PRETRAIN_ARCHS}')
    repo = Repo(root)
    cfg = repo.load(f'mixedae-{arch}').model
    knobs = repo.load(f'{method}-base').model
    for path in METHOD_KEYS:
        src, dst = knobs, cfg
        for key in path[:-1]:
            src, dst = src[key], dst[key]
        dst[path[-1]] = src[path[-1]]
    cfg.pop('batch_size', None)
    return cfg


def measure_pretrain(root: str, method: str, arch: str = 'base', batch: int = 16,
                     device: str = 'cpu', amp: bool = False, warmup: int = 1,
                     repeats: int = 3) -> Dict:
    """Forward + backward of one method's pretraining loss on random images."""
    from mmengine.registry import DefaultScope

    from mixedae.registry import MODELS

    dev = torch.device(device)
    cfg = pretrain_model_config(root, method, arch)
    rss = current_rss_mib()                       # after the config's imports, before the model
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(cfg).to(dev).train()
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
    result = time_step(step, dev, warmup, repeats, rss)
    return dict(method=method, flops=flops, images_per_s=batch / result['step_s'], **result)


def pretrain_table(results: Sequence[Dict], device: str,
                   peak_tflops: Optional[float] = None) -> str:
    """Markdown: time, images/s, TFLOP per step, TFLOP/s, [MFU,] memory, time vs MAE."""
    base = next((r for r in results if r['method'] == 'mae'), None)
    header = ['method', 'time / step (s)', 'images / s', 'TFLOP / step', 'TFLOP/s']
    header += ['MFU'] if peak_tflops else []
    header += [memory_title(device), 'time vs MAE']
    rows = []
    for r in results:
        achieved = r['flops'] / r['step_s'] / 1e12
        row = {'method': r['method'], 'time / step (s)': f'{r["step_s"]:.3f}',
               'images / s': f'{r["images_per_s"]:.1f}', 'TFLOP / step': f'{r["flops"] / 1e12:.4g}',
               'TFLOP/s': f'{achieved:.3g}', memory_title(device): f'{r["peak_mib"]:.0f}',
               'time vs MAE': f'{r["step_s"] / base["step_s"]:.3f}' if base else 'n/a'}
        if peak_tflops:
            row['MFU'] = f'{100 * achieved / peak_tflops:.3g} %'
        rows.append(row)
    return markdown_table(rows, header)


def benchmark_pretrain(root: str, methods: Sequence[str] = PRETRAIN_METHODS,
                       arch: str = 'base', batch: int = 16, device: str = 'cpu', amp: bool = False, warmup: int = 1,
                       repeats: int = 3, peak_tflops: Optional[float] = None):
    """Measure each method in its own process; (results, markdown report)."""
    results = [run_isolated(measure_pretrain, root=root, method=m, arch=arch, batch=batch, device=device,
                            amp=amp, warmup=warmup, repeats=repeats) for m in methods]
    title = (f'ViT {arch}, batch {batch}, {"bf16 autocast" if amp else "fp32"}, '
             f'{device_description(device)}; median of {repeats} after {warmup} warm-up')
    return results, f'{title}\n\n{pretrain_table(results, device, peak_tflops)}'


# ----------------------------------------------------------------- backbones
def backbone_config(root: str, protocol: str, scale: str = 'base',
                    img_size: Optional[int] = None):
    """The protocol config's ``model.backbone`` (no checkpoint), sized for ``img_size`` input
    (default: the config's training size)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown protocol {protocol!r}; choose from {PROTOCOLS}')
    if scale not in SCALES:
        raise ValueError(f'unknown scale {scale!r}; choose from {SCALES}')
    cfg = Repo(root).load(f'{protocol}-{scale}', import_modules=False).model.backbone
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


def measure_backbone(root: str, protocol: str, model: str = 'config', scale: str = 'base',
                     img_size: Optional[int] = None, batch: int = 2, device: str = 'cpu',
                     amp: bool = False, warmup: int = 1, repeats: int = 3) -> Dict:
    """Forward + backward of one backbone on random images."""
    dev = torch.device(device)
    cfg = backbone_config(root, protocol, scale, img_size)
    rss = current_rss_mib()                       # after the config's imports, before the model
    torch.manual_seed(0)
    net = build_backbone(model, cfg).to(dev).train()
    h, w = cfg.img_size if isinstance(cfg.img_size, (list, tuple)) else (cfg.img_size,) * 2
    images = torch.randn(batch, 3, h, w, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = backbone_loss(net, images)
        loss.backward()
        net.zero_grad(set_to_none=True)

    result = time_step(step, dev, warmup, repeats, rss)
    return dict(protocol=protocol, model=model, input=f'{h}x{w}', batch=batch,
                images_per_s=batch / result['step_s'], **result)


def backbone_table(results: Sequence[Dict], device: str) -> str:
    """Markdown: one row per (protocol, model), ratios to the protocol's timm row."""
    mem = memory_title(device)
    header = ['protocol', 'backbone', 'input', 'batch', 's / iter', 'img / s', mem,
              'time vs timm', 'memory vs timm']
    yardsticks = {r['protocol']: r for r in results if r['model'] == 'timm'}
    rows = []
    for r in results:
        ref = yardsticks.get(r['protocol'])
        rows.append({
            'protocol': r['protocol'],
            'backbone': 'timm ViT (fused, no rel-pos)' if r['model'] == 'timm' else 'mixedae.ViT',
            'input': r['input'], 'batch': str(r['batch']), 's / iter': f'{r["step_s"]:.4f}',
            'img / s': f'{r["images_per_s"]:.1f}', mem: f'{r["peak_mib"]:.0f}',
            'time vs timm': f'{r["step_s"] / ref["step_s"]:.2f}' if ref else 'n/a',
            'memory vs timm': (f'{r["peak_mib"] / ref["peak_mib"]:.2f}'
                               if ref and ref['peak_mib'] > 0 else 'n/a')})
    return markdown_table(rows, header)


def benchmark_backbones(root: str, protocols: Sequence[str] = PROTOCOLS, scale: str = 'base',
                        img_size: Optional[int] = None, batch: int = 2, device: str = 'cpu',
                        amp: bool = False, warmup: int = 1, repeats: int = 3):
    """The yardstick, then the config's backbone, per protocol, each in its own process;
    (results, markdown report)."""
    results: List[Dict] = []
    for protocol in protocols:
        for model in BACKBONE_MODELS:
            results.append(run_isolated(
                measure_backbone, root=root, protocol=protocol, model=model, scale=scale,
                img_size=img_size, batch=batch, device=device, amp=amp, warmup=warmup,
                repeats=repeats))
    title = (f'{scale} backbones, fwd + bwd, {"bf16 autocast" if amp else "fp32"}, '
             f'{device_description(device)}; median of {repeats} after {warmup} warm-up')
    return results, f'{title}\n\n{backbone_table(results, device)}'
