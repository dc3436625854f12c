"""GPU smoke check that needs no network (``tools/gpu_check.sh``, ``tools/gpu_check.py``).

On a CUDA machine with the package importable (whatever torch is installed), within about 5
minutes after imports on one H100: which mmcv ops path serves nms / roi_align (compiled mmcv or
the torchvision-backed ``mmcv._ext``) and that both run on the device; one bf16 AMP training
step (``AmpOptimWrapper``, the path ``tools/train.py --amp`` takes) of every model family at
ViT-B scale (MAE, naive mixing and MixedAE pretraining; UperNet on ADE20K; Mask R-CNN in both
COCO protocols); a short train + test of the tiny ADE20K and COCO configs on generated data
with MMEngine's Runner in this process (mIoU, box and mask AP from the real evaluators); the
top-K attention kernel against its PyTorch reference; the pretraining benchmark at batch 256
and the backbone benchmark at the target setting (512², batch 16, all three protocols).

The result is one table (check, status, detail), the benchmark tables under it, and a JSON file
with the same and the raw timings. A benchmark comparison row is ``ok``, ``noisy`` (the timings
cannot carry the ratio: :func:`~.speed.ratio_warning`) or ``below target``; exit status 1 only
if a check failed. Without CUDA the tool refuses to run unless ``--allow-cpu`` (fp32; the tests
use it with ``--scale tiny``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from mixedae.utils.io import atomic_write

from .repo import Repo, set_data_root
from .speed import (PRETRAIN_METHODS, PROTOCOLS, benchmark_backbones, benchmark_pretrain,
                    device_description, homologous_attention_shape, pretrain_model_config,
                    ratio_warning)
from .tables import markdown_table

#: per scale: pretraining arch, protocol config scale, images per step (pretrain, transfer),
#: sequences T of the top-K attention test (its H, N, hd and K are the arch's MixedAE config's:
#: ``speed.homologous_attention_shape``), and the benchmarks' settings
SCALES = dict(
    base=dict(arch='base', protocol='base', pretrain_batch=16, transfer_batch=2,
              attention_seqs=8, bench=dict(
                  pretrain_batch=256, backbone_batch=16, img_size=512, warmup=3, repeats=10)),
    tiny=dict(arch='tiny', protocol='tiny', pretrain_batch=8, transfer_batch=2,
              attention_seqs=2, bench=dict(
                  pretrain_batch=8, backbone_batch=2, img_size=None, warmup=1, repeats=3)))
#: max |kernel - reference| allowed, relative and absolute, per dtype
TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
#: MixedAE's step time / MAE's (issue 22, ViT-B/16, batch 256, bf16)
PRETRAIN_TARGET = 1.05
#: a transfer backbone's time and peak memory / timm's fused ViT (512², batch 16, bf16)
BACKBONE_TARGETS = dict(time=1.3, memory=1.5)
#: end-to-end runs: tiny config name, its metrics, training iterations, generated scenes
END_TO_END = (('ade20k', 'UperNet ADE20K', ('mIoU',)),
              ('coco_a', 'Mask R-CNN protocol A', ('coco/bbox_mAP', 'coco/segm_mAP')))
END_TO_END_ITERS = 8
END_TO_END_SCENES = dict(num_train=8, num_val=4, size=(64, 80))


class Skip(Exception):
    """The check cannot run here; the message says why."""


class NotAvailable(Exception):
    """What the check exercises is not part of this installation."""


def run_check(name: str, fn: Callable[[], str]) -> Dict[str, str]:
    """Run one check: ok (detail), skipped / not available (why) or FAIL (error; traceback on
    stderr). What the check prints (logs, the evaluators' tables) goes to stderr, so that stdout
    holds the result alone."""
    print(f'[gpu_check] {name} ...', file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
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
def mmcv_ops_check(device: torch.device) -> str:
    """Which ``mmcv._ext`` serves the ops (compiled or torchvision-backed); nms and roi_align
    (forward and backward) run on ``device``."""
    from mmcv.ops import nms, roi_align

    from mixedae.utils.mmcv_ops import compiled_mmcv_ops

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], device=device)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8], device=device), 0.5)
    feats = torch.rand(1, 2, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[0., 1., 1., 6., 6.]], device=device)
    roi_align(feats, rois, (2, 2), 1.0, 2, 'avg', True).sum().backward()
    if keep.tolist() != [0] or not torch.isfinite(feats.grad).all():
        raise RuntimeError(f'mmcv ops gave wrong results: nms kept {keep.tolist()}')
    path = ('compiled mmcv ops' if compiled_mmcv_ops()
            else 'torchvision-backed mmcv._ext (mixedae.utils.mmcv_ops)')
    return f'{path}; nms and roi_align (fwd + bwd) run on {device.type}'


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
    loss = float(torch.as_tensor(log_vars['loss']).detach())
    if not math.isfinite(loss):
        raise RuntimeError(f'non-finite loss {loss}: {dict(log_vars)}')
    after = [p for p in model.parameters() if p.requires_grad]
    if all(torch.equal(a, b) for a, b in zip(before, after)):
        raise RuntimeError('the optimizer step changed no weight')
    precision = 'bf16 AMP' if device.type == 'cuda' else 'fp32'
    return f'{precision}, loss {loss:.4f}, {seconds:.2f} s (first step)'


def pretrain_check(repo: Repo, method: str, scale: dict,
                   device: torch.device) -> Callable[[], str]:
    def check() -> str:
        model_cfg = pretrain_model_config(repo, method, scale['arch'])
        optim_cfg = repo.load(f'mixedae-{scale["arch"]}').optim_wrapper
        size = model_cfg.backbone.img_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        data = dict(inputs=synthetic_images(scale['pretrain_batch'], size))
        return train_one_step(model_cfg, optim_cfg, data, device, 'mixedae')
    return check


def transfer_check(repo: Repo, protocol: str, scale: dict,
                   device: torch.device) -> Callable[[], str]:
    def check() -> str:
        from mmengine.utils import import_modules_from_strings

        cfg = repo.load(f'{protocol}-{scale["protocol"]}')
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


# ------------------------------------------------------------- end to end
def point_at_data(cfg, protocol: str, views: Dict[str, str], work_dir: str, iters: int) -> None:
    """Set up ``cfg`` (a tiny config) to train for ``iters`` iterations on the generated
    ``views`` into ``work_dir`` and to test on their val split (no validation during training)."""
    root = views['ade20k'] if protocol == 'ade20k' else views['coco'] + '/'
    set_data_root(cfg, protocol, root, splits=('train', 'test'))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg.max_iters, cfg.train_cfg.val_interval = iters, iters
    cfg.work_dir, cfg.launcher, cfg.log_level = work_dir, 'none', 'WARNING'


def end_to_end_check(repo: Repo, protocol: str, metrics: Sequence[str], views: Dict[str, str],
                     work_dir: str, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        from mmengine.runner import Runner

        from mixedae.engine.optimizers.amp_optim_wrapper import configure_amp

        cfg = repo.load(f'{protocol}-tiny')
        point_at_data(cfg, protocol, views, work_dir, END_TO_END_ITERS)
        if device.type == 'cuda':
            configure_amp(cfg, 'bfloat16')
        runner = Runner.from_cfg(cfg)
        runner.train()
        results = runner.test()
        values = {m: float(results[m]) for m in metrics}
        if not all(math.isfinite(v) for v in values.values()):
            raise RuntimeError(f'non-finite metrics: {values}')
        precision = 'bf16 AMP' if device.type == 'cuda' else 'fp32'
        return (f'{precision}, {END_TO_END_ITERS} iterations + test on '
                f'{END_TO_END_SCENES["num_val"]} generated images: '
                + ', '.join(f'{m} {v:.2f}' for m, v in values.items()))
    return check


# -------------------------------------------------------------- benchmarks
def target_status(exceeded: bool, warning: Optional[str]) -> str:
    """``below target`` (``(noisy)`` added when the timings are), else ``noisy`` or ``ok``."""
    if exceeded:
        return 'below target (noisy)' if warning else 'below target'
    return 'noisy' if warning else 'ok'


def pretrain_rows(results: Sequence[Dict], batch: int) -> List[Dict[str, str]]:
    """One row per method against MAE; MixedAE's has the target."""
    mae = next(r for r in results if r['method'] == 'mae')
    rows = []
    for r in results:
        if r is mae:
            continue
        ratio = r['step_s'] / mae['step_s']
        warning = ratio_warning(f'{r["method"]} vs mae', ratio, r, mae)
        target = PRETRAIN_TARGET if r['method'] == 'mixedae' else None
        detail = f'{ratio:.2f}x MAE step time (median)'
        detail += f', target <= {target:.2f}x at batch 256' if target else ', no target'
        rows.append(dict(check=f'speed: {r["method"]} vs MAE, batch {batch}',
                         status=target_status(bool(target) and ratio > target, warning),
                         detail=detail + (f'; {warning}' if warning else '')))
    return rows


def backbone_rows(results: Sequence[Dict]) -> List[Dict[str, str]]:
    """One row per protocol: time and memory against timm's, with the targets."""
    timm = {r['protocol']: r for r in results if r['model'] == 'timm'}
    rows = []
    for r in results:
        ref = timm.get(r['protocol'])
        if r['model'] != 'config' or ref is None:
            continue
        time_ratio = r['step_s'] / ref['step_s']
        warning = ratio_warning(f'{r["protocol"]} backbone vs timm', time_ratio, r, ref)
        exceeded = time_ratio > BACKBONE_TARGETS['time']
        detail = f'{time_ratio:.2f}x time'
        if ref['peak_mib'] > 0:
            memory_ratio = r['peak_mib'] / ref['peak_mib']
            exceeded = exceeded or memory_ratio > BACKBONE_TARGETS['memory']
            detail += f', {memory_ratio:.2f}x memory'
        detail += (f' of timm (targets <= {BACKBONE_TARGETS["time"]}x, '
                   f'{BACKBONE_TARGETS["memory"]}x)')
        rows.append(dict(check=f'speed: {r["protocol"]} backbone vs timm, {r["input"]}, '
                               f'batch {r["batch"]}',
                         status=target_status(exceeded, warning),
                         detail=detail + (f'; {warning}' if warning else '')))
    return rows


# -------------------------------------------------------------------- main
def run_all(repo: Repo, device: torch.device, scale_name: str) -> Dict:
    """The check table's rows, the benchmark tables and results, with the configs of the
    checkout ``repo``: the report :func:`write_report` saves (less ``seconds``)."""
    scale, bench = SCALES[scale_name], SCALES[scale_name]['bench']
    rows = [dict(check='device', status='ok', detail=device_description(str(device))),
            run_check('mmcv ops', lambda: mmcv_ops_check(device))]
    for method in PRETRAIN_METHODS:
        rows.append(run_check(f'train step: {method} pretraining ({scale["arch"]})',
                              pretrain_check(repo, method, scale, device)))
    names = dict(ade20k='UperNet ADE20K', coco_a='Mask R-CNN protocol A',
                 vitdet='Mask R-CNN ViTDet')
    for protocol in PROTOCOLS:
        rows.append(run_check(f'train step: {names[protocol]} ({scale["protocol"]})',
                              transfer_check(repo, protocol, scale, device)))
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        from mixedae.datasets.synthetic import write_dataset
        views = write_dataset(os.path.join(tmp, 'data'), **END_TO_END_SCENES,
                              views=('ade20k', 'coco'))
        for protocol, name, metrics in END_TO_END:
            rows.append(run_check(f'train + test: {name} (tiny, generated data)',
                                  end_to_end_check(repo, protocol, metrics, views,
                                                   os.path.join(tmp, protocol), device)))
    attention = (scale['attention_seqs'], *homologous_attention_shape(repo, scale['arch']))
    rows.append(run_check('top-K attention kernel vs reference',
                          lambda: kernel_check(attention, device)))
    amp, tables, results = device.type == 'cuda', [], {}

    def pretrain() -> str:
        results['pretrain'], table = benchmark_pretrain(
            repo, PRETRAIN_METHODS, scale['arch'], bench['pretrain_batch'], str(device), amp,
            bench['warmup'], bench['repeats'])
        tables.append(table)
        return f'{len(PRETRAIN_METHODS)} methods, table below'

    def backbones() -> str:
        results['backbones'], table = benchmark_backbones(
            repo, PROTOCOLS, scale['protocol'], bench['img_size'], bench['backbone_batch'],
            str(device), amp, bench['warmup'], bench['repeats'])
        tables.append(table)
        return f'{len(PROTOCOLS)} protocols, table below'

    rows.append(run_check('benchmark: pretraining', pretrain))
    if 'pretrain' in results:
        rows += pretrain_rows(results['pretrain'], bench['pretrain_batch'])
    rows.append(run_check('benchmark: backbones', backbones))
    if 'backbones' in results:
        rows += backbone_rows(results['backbones'])
    return dict(device=device_description(str(device)), torch=torch.__version__,
                cuda=torch.version.cuda, scale=scale_name, rows=rows, tables=tables,
                benchmarks=results)


def summary(report: Dict) -> str:
    """The printed result: the check table, the benchmark tables and one closing line."""
    rows = report['rows']
    failed = [r['check'] for r in rows if r['status'] == 'FAIL']
    below = [r['check'] for r in rows if r['status'].startswith('below target')]
    noisy = [r['check'] for r in rows if 'noisy' in r['status']]
    parts = [markdown_table(rows, ['check', 'status', 'detail']), *report['tables'],
             f'gpu_check: {len(failed)} failed{": " + ", ".join(failed) if failed else ""}; '
             f'{len(below)} below target, {len(noisy)} noisy; {report["seconds"]:.0f} s']
    return '\n\n'.join(parts)


def write_report(path: str, report: Dict) -> None:
    """``report`` as JSON at ``path``, atomically."""
    with atomic_write(path) as f:
        json.dump(report, f, indent=1)
