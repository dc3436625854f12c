"""GPU smoke check that needs no network (``tools/gpu_check.sh``, ``tools/gpu_check.py``).

On a CUDA machine with the package importable (whatever torch is installed), in a few minutes:
one bf16 AMP training step (``AmpOptimWrapper``, the path ``tools/train.py --amp`` takes) of
every model family at ViT-B scale (MAE, naive mixing and MixedAE pretraining; UperNet on
ADE20K; Mask R-CNN in both COCO protocols), the top-K attention kernel against its PyTorch
reference on the GPU, and both speed benchmarks at reduced repeats. Prints one table (check,
status, detail) and the benchmark tables; exits 1 if any check failed.

mmseg's and mmdet's model packages import mmcv's compiled ops: without them (or without their
CUDA kernels, for detection) those steps are skipped with the reason, and the rest still runs.
Without CUDA the tool refuses to run unless ``--allow-cpu`` (fp32 steps; the tests use it with
``--scale tiny``).
"""
from __future__ import annotations

import importlib
import math
import os
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .repo import Repo
from .speed import (PRETRAIN_METHODS, PROTOCOLS, benchmark_backbones, benchmark_pretrain,
                    device_description, pretrain_model_config)
from .tables import markdown_table

#: per scale: pretraining arch, protocol config scale, images per step (pretrain, transfer),
#: top-K attention test shape (T, H, N, hd, K), and the benchmarks' batches, repeats and
#: subsets (tiny: fewer spawned processes, for the CPU test)
SCALES = dict(
    base=dict(arch='base', protocol='base', pretrain_batch=16, transfer_batch=2,
              attention=(8, 12, 200, 64, 50), bench=dict(
                  pretrain_batch=64, backbone_batch=4, warmup=2, repeats=3,
                  methods=PRETRAIN_METHODS, protocols=tuple(PROTOCOLS))),
    tiny=dict(arch='tiny', protocol='tiny', pretrain_batch=8, transfer_batch=2,
              attention=(2, 2, 20, 16, 6), bench=dict(
                  pretrain_batch=8, backbone_batch=2, warmup=0, repeats=1,
                  methods=('mae', 'mixedae'), protocols=('vitdet',))))
#: max |kernel - reference| allowed, relative and absolute, per dtype
TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


class Skip(Exception):
    """The check cannot run here; the message says why."""


class NotAvailable(Exception):
    """What the check exercises is not part of this installation."""


def run_check(name: str, fn: Callable[[], str]) -> Dict[str, str]:
    """Run one check: ok (detail), skipped / not available (why) or FAIL (error; traceback on
    stderr)."""
    print(f'[gpu_check] {name} ...', file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        detail, status = fn(), 'ok'
    except Skip as why:
        detail, status = str(why), 'skipped'
    except NotAvailable as why:
        detail, status = str(why), 'not available'
    except Exception as err:  # the smoke check reports every failure and goes on
        traceback.print_exc()
        detail, status = f'{type(err).__name__}: {err}'.splitlines()[0][:300], 'FAIL'
    print(f'[gpu_check] {name}: {status} ({time.perf_counter() - start:.1f} s)',
          file=sys.stderr, flush=True)
    return dict(check=name, status=status, detail=detail)


# --------------------------------------------------------------- mmcv ops
def mmcv_ops_problem(device: torch.device) -> Dict[str, Optional[str]]:
    """Why mmseg (needs the compiled ops) and mmdet (also their kernels on ``device``) cannot
    run here; None where they can."""
    try:
        importlib.import_module('mmcv._ext')
    except ImportError as err:
        why = (f'mmcv compiled ops missing ({err}); mmseg and mmdet model packages import them '
               '(build mmcv with ops: tools/setup_env.sh)')
        return dict(seg=why, det=why)
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], device=device)
    try:
        nms(boxes, torch.tensor([0.9, 0.8], device=device), 0.5)
    except RuntimeError as err:
        return dict(seg=None,
                    det=f'mmcv nms has no {device.type} kernel ({err}); detection needs it')
    return dict(seg=None, det=None)


# ------------------------------------------------------------ training steps
def synthetic_images(batch: int, size: Sequence[int]) -> List[torch.Tensor]:
    """uint8 3 x H x W images, as the datasets' packing transforms give them."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8)
            for _ in range(batch)]


def seg_batch(batch: int, size: Sequence[int], num_classes: int) -> Dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for i in range(batch):
        s = SegDataSample(metainfo=dict(img_shape=tuple(size), ori_shape=tuple(size)))
        label = torch.zeros(1, *size, dtype=torch.long)
        label[:, size[0] // 4:size[0] // 2, size[1] // 4:] = (i + 1) % num_classes
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return dict(inputs=synthetic_images(batch, size), data_samples=samples)


def det_batch(batch: int, size: Sequence[int], num_classes: int) -> Dict:
    """Two rectangular objects per image, with boxes and masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = size
    rects = [(w // 8, h // 8, w // 2, h // 2), (w // 2, h // 3, w - w // 8, h - h // 8)]
    samples = []
    for i in range(batch):
        masks = np.zeros((len(rects), h, w), dtype=np.uint8)
        for j, (x1, y1, x2, y2) in enumerate(rects):
            masks[j, y1:y2, x1:x2] = 1
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), img_id=i,
                                        scale_factor=(1., 1.)))
        s.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(torch.tensor(rects, dtype=torch.float32)),
            labels=torch.tensor([i % num_classes, (i + 1) % num_classes]),
            masks=BitmapMasks(masks, h, w))
        samples.append(s)
    return dict(inputs=synthetic_images(batch, size), data_samples=samples)


def train_one_step(model_cfg, optim_cfg, data: Dict, device: torch.device, scope: str) -> str:
    """One ``train_step`` through the config's optim wrapper (bf16 ``AmpOptimWrapper`` on CUDA);
    raises unless the loss is finite and the weights changed."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope

    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(MODELS.build(model_cfg)).to(device).train()
        optim_cfg = dict(optim_cfg)
        if device.type == 'cuda':
            optim_cfg.update(type='AmpOptimWrapper', dtype='bfloat16')
        wrapper = build_optim_wrapper(model, optim_cfg)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    log_vars = model.train_step(data, wrapper)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    loss = float(log_vars['loss'])
    if not math.isfinite(loss):
        raise RuntimeError(f'non-finite loss {loss}: {dict(log_vars)}')
    after = [p for p in model.parameters() if p.requires_grad]
    if all(torch.equal(a, b) for a, b in zip(before, after)):
        raise RuntimeError('the optimizer step changed no weight')
    precision = 'bf16 AMP' if device.type == 'cuda' else 'fp32'
    return f'{precision}, loss {loss:.4f}, {seconds:.2f} s (first step)'


def pretrain_check(root: str, method: str, scale: dict,
                   device: torch.device) -> Callable[[], str]:
    def check() -> str:
        model_cfg = pretrain_model_config(root, method, scale['arch'])
        optim_cfg = Repo(root).load(f'mixedae-{scale["arch"]}').optim_wrapper
        size = model_cfg.backbone.img_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        data = dict(inputs=synthetic_images(scale['pretrain_batch'], size))
        return train_one_step(model_cfg, optim_cfg, data, device, 'mixedae')
    return check


def transfer_check(root: str, protocol: str, scale: dict, device: torch.device,
                   problem: Optional[str]) -> Callable[[], str]:
    def check() -> str:
        if problem:
            raise Skip(problem)
        from mmengine.utils import import_modules_from_strings

        cfg = Repo(root).load(f'{protocol}-{scale["protocol"]}')
        import_modules_from_strings(**cfg.custom_imports)
        size = cfg.model.backbone.img_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if protocol == 'ade20k':
            data = seg_batch(scale['transfer_batch'], size, cfg.model.decode_head.num_classes)
        else:
            data = det_batch(scale['transfer_batch'], size,
                             cfg.model.roi_head.bbox_head.num_classes)
        model_cfg = cfg.model
        model_cfg.backbone.pop('init_cfg', None)
        return train_one_step(model_cfg, cfg.optim_wrapper, data, device, cfg.default_scope)
    return check


# ------------------------------------------------------------ top-K kernel
def attention_inputs(shape: Sequence[int], dtype: torch.dtype, device: torch.device):
    """q, k with entries in {-1, 0, 1} (exact logits in any summation order, so both paths
    select the same keys, ties included), v normal, labels of G = 4 sources, an output grad."""
    t, h, n, hd, _ = shape
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randint(-1, 2, (t, h, n, hd), generator=g).to(device, dtype) for _ in 'qk')
    v = torch.randn(t, h, n, hd, generator=g).to(device, dtype)
    labels = torch.randint(0, 4, (t, n), generator=g).to(device)
    grad = torch.randn(t, h, n, hd, generator=g).to(device, dtype)
    return q, k, v, labels, grad


def kernel_check(shape: Sequence[int], device: torch.device) -> str:
    try:
        from mixedae.models.layers.topk_attention import topk_attention
    except ImportError as err:
        raise NotAvailable(f'mixedae.models.layers.topk_attention does not import ({err})')
    if device.type != 'cuda' and os.environ.get('TRITON_INTERPRET') != '1':
        raise Skip('Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on CPU)')
    dtypes = list(TOLERANCES) if device.type == 'cuda' else [torch.float32]
    details = []
    for dtype in dtypes:
        q, k, v, labels, grad = attention_inputs(shape, dtype, device)
        outs = {}
        for impl in ('triton', 'reference'):
            qkv = [x.clone().requires_grad_() for x in (q, k, v)]
            out, precision = topk_attention(*qkv, shape[-1], labels, impl=impl)
            out.backward(grad)
            outs[impl] = [out.detach(), *(x.grad for x in qkv)]
            outs[impl + ' precision'] = precision
        tol = TOLERANCES[dtype]
        worst = 0.
        for name, a, b in zip(('out', 'dq', 'dk', 'dv'), outs['triton'], outs['reference']):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol,
                                       msg=lambda m, name=name: f'{dtype} {name}: {m}')
            worst = max(worst, (a.float() - b.float()).abs().max().item())
        torch.testing.assert_close(outs['triton precision'], outs['reference precision'])
        details.append(f'{str(dtype)[6:]} max|diff| {worst:.1e}')
    t, h, n, hd, topk = shape
    return f'T{t} H{h} N{n} hd{hd} K{topk}, out and q/k/v grads: ' + ', '.join(details)


# -------------------------------------------------------------- benchmarks
def pretrain_bench_check(root: str, scale: dict, device: torch.device, reports: List[str]):
    def check() -> str:
        bench = scale['bench']
        results, report = benchmark_pretrain(
            root, bench['methods'], scale['arch'], bench['pretrain_batch'], str(device),
            device.type == 'cuda', bench['warmup'], bench['repeats'])
        reports.append(report)
        mae = next(r for r in results if r['method'] == 'mae')
        return ', '.join(f'{r["method"]} {r["step_s"] / mae["step_s"]:.2f}x MAE'
                         for r in results[1:]) + ' (target: MixedAE <= 1.10x at batch 256)'
    return check


def backbone_bench_check(root: str, scale: dict, device: torch.device, reports: List[str]):
    def check() -> str:
        bench = scale['bench']
        results, report = benchmark_backbones(
            root, bench['protocols'], scale['protocol'], None, bench['backbone_batch'], str(device),
            device.type == 'cuda', bench['warmup'], bench['repeats'])
        reports.append(report)
        timm = {r['protocol']: r for r in results if r['model'] == 'timm'}
        return ', '.join(
            f'{r["protocol"]} {r["step_s"] / timm[r["protocol"]]["step_s"]:.2f}x time '
            f'{r["peak_mib"] / timm[r["protocol"]]["peak_mib"]:.2f}x memory'
            for r in results if r['model'] == 'config') + ' of timm (target: <= 1.3x, 1.5x)'
    return check


# -------------------------------------------------------------------- main
def run_all(root: str, device: torch.device, scale_name: str
            ) -> Tuple[List[Dict[str, str]], List[str]]:
    """The table rows and the benchmark reports, with the configs of the checkout ``root``."""
    scale = SCALES[scale_name]
    rows = [dict(check='device', status='ok', detail=device_description(str(device)))]
    problems = mmcv_ops_problem(device)
    rows.append(dict(check='mmcv compiled ops',
                     status='ok' if not problems['det'] else 'not available',
                     detail=problems['det'] or 'nms runs on ' + device.type))
    for method in PRETRAIN_METHODS:
        rows.append(run_check(f'train step: {method} pretraining ({scale["arch"]})',
                              pretrain_check(root, method, scale, device)))
    names = dict(ade20k='UperNet ADE20K', coco_a='Mask R-CNN protocol A',
                 vitdet='Mask R-CNN ViTDet')
    for protocol in PROTOCOLS:
        problem = problems['seg' if protocol == 'ade20k' else 'det']
        rows.append(run_check(f'train step: {names[protocol]} ({scale["protocol"]})',
                              transfer_check(root, protocol, scale, device, problem)))
    rows.append(run_check('top-K attention kernel vs reference',
                          lambda: kernel_check(scale['attention'], device)))
    reports: List[str] = []
    rows.append(run_check('benchmark: pretraining',
                          pretrain_bench_check(root, scale, device, reports)))
    rows.append(run_check('benchmark: backbones',
                          backbone_bench_check(root, scale, device, reports)))
    return rows, reports


def summary(rows: Sequence[Dict[str, str]], reports: Sequence[str], seconds: float) -> str:
    """The printed result: the check table, the benchmark tables and one closing line."""
    failed = [r['check'] for r in rows if r['status'] == 'FAIL']
    parts = [markdown_table(rows, ['check', 'status', 'detail']), *reports,
             f'gpu_check: {len(failed)} failed{": " + ", ".join(failed) if failed else ""}; '
             f'{seconds:.0f} s']
    return '\n\n'.join(parts)
