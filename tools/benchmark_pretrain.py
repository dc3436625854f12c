#!/usr/bin/env python
"""Pretraining cost of MAE, naive mixing and MixedAE with the same backbone and batch.

Times forward + backward of the models built from the ViT-{S,B,L}/16 pretraining configs
(warm-up steps, then the median of repeats) and prints a markdown table: time per step,
images/s, peak memory and the ratio to MAE. Each method runs in its own process so that peak
memory (CUDA allocator peak, or process peak RSS on CPU) is its own.

    python tools/benchmark_pretrain.py --arch base --batch 16 --device cpu
    python tools/benchmark_pretrain.py --arch base --batch 512 --device cuda --amp
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ('mae', 'naivemix', 'mixedae')
ARCHS = dict(small='mixedae_vit-small-p16_8xb512-coslr-300e_in1k.py',
             base='mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py',
             large='mixedae_vit-large-p16_8xb512-coslr-300e_in1k.py')
# the baselines' configs change these knobs of the MixedAE config (see configs/pretrain/)
SWITCHES = dict(
    mae='mae_vit-base-p16_8xb512-coslr-300e_in1k.py',
    naivemix='naivemix_vit-base-p16_8xb512-coslr-300e_in1k.py',
    mixedae='mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', choices=sorted(ARCHS), default='base')
    p.add_argument('--batch', type=int, default=16, help='images per step (divisible by 4)')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    p.add_argument('--out', help='also write the results as JSON here')
    p.add_argument('--single', choices=METHODS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def model_config(method: str, arch: str):
    """The method's model config with the architecture of ``arch``."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/pretrain', SWITCHES[method])).model
    arch_cfg = Config.fromfile(os.path.join(ROOT, 'configs/pretrain', ARCHS[arch])).model
    for key in ('embed_dim', 'depth', 'num_heads'):
        cfg.backbone[key] = arch_cfg.backbone[key]
    cfg.pop('batch_size', None)
    return cfg


def measure(method: str, args) -> dict:
    import torch
    from mmengine.registry import DefaultScope

    import mixedae  # noqa: F401
    from mixedae.registry import MODELS

    device = torch.device(args.device)
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(model_config(method, args.arch)).to(device).train()
    size = model.backbone.patch_embed.img_size
    images = torch.randn(args.batch, 3, *size, device=device)
    torch.manual_seed(0)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            losses = model.loss(images)
            loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    median = statistics.median(times)
    return dict(method=method, step_s=median, images_per_s=args.batch / median, peak_mib=peak,
                times=times)


def device_name(device: str) -> str:
    import torch
    if device.startswith('cuda'):
        return torch.cuda.get_device_name(0)
    return f'{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads'


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.batch % 4:
        raise SystemExit(f'--batch {args.batch} must be divisible by G = 4')
    if args.single:
        print(json.dumps(measure(args.single, args)))
        return 0
    results = []
    for method in args.methods:
        cmd = [sys.executable, os.path.abspath(__file__), '--single', method,
               *[a for a in (argv if argv is not None else sys.argv[1:])]]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f'{method} failed:\n{out.stderr[-3000:]}')
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f'{method}: {results[-1]["step_s"]:.3f} s/step', file=sys.stderr)
    base = next((r for r in results if r['method'] == 'mae'), None)
    mem = 'peak GPU memory (MiB)' if args.device.startswith('cuda') else 'peak RSS (MiB)'
    print(f'ViT-{args.arch[0].upper()}/16, batch {args.batch}, {args.device}'
          f'{" bf16" if args.amp else " fp32"}, {device_name(args.device)}, '
          f'median of {args.repeats} after {args.warmup} warm-up\n')
    print(f'| method | time / step (s) | images / s | {mem} | time vs MAE |')
    print('|---|---|---|---|---|')
    for r in results:
        ratio = f'{r["step_s"] / base["step_s"]:.3f}' if base else 'n/a'
        print(f'| {r["method"]} | {r["step_s"]:.3f} | {r["images_per_s"]:.1f} | '
              f'{r["peak_mib"]:.0f} | {ratio} |')
    if args.out:
        from mixedae.utils.io import atomic_write
        with atomic_write(args.out) as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
