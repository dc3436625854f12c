#!/usr/bin/env python
"""Per-kernel timings of the top-K attention kernels (forward, backward, both) for each launch
shape, against SDPA in the same run; each variant is first checked against the reference.
Needs a CUDA GPU (exit status 2 without one). ``--static`` needs none: it compiles every kernel
and launch variant for sm_90a (H100) and prints registers, spills, shared memory, blocks per SM
and tensor-core instructions. See mixedae/suite/topk_bench.py.

    .venv/bin/python tools/benchmark_topk_kernels.py            # the ViT-B config's shape, bf16
    .venv/bin/python tools/benchmark_topk_kernels.py --variants default 'fwd warps 4' --out topk.json
    .venv/bin/python tools/benchmark_topk_kernels.py --static   # no GPU needed
"""
import argparse
import json
import os.path as osp

import torch

from mixedae.suite.speed import homologous_attention_shape
from mixedae.suite.topk_bench import (NO_CUDA, benchmark_topk_kernels, static_cases,
                                      static_metrics, static_table)
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import DeviceUnavailableError

REPO = Repo(osp.dirname(osp.dirname(osp.abspath(__file__))))

DTYPES = dict(bfloat16=torch.bfloat16, float16=torch.float16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    vit_b = homologous_attention_shape(REPO, 'base')          # the MixedAE ViT-B/16 config's
    p.add_argument('--seqs', type=int, default=64, help='sequences T (batch 256 / G = 4)')
    p.add_argument('--heads', type=int, default=vit_b.heads, help='default: ViT-B config')
    p.add_argument('--tokens', type=int, default=vit_b.tokens,
                   help="N' (default: ViT-B config, N patches + G class tokens)")
    p.add_argument('--head-dim', type=int, default=vit_b.head_dim, help='default: ViT-B config')
    p.add_argument('--topk', type=int, default=vit_b.topk,
                   help="K (default: ViT-B config's, N/G + 1)")
    p.add_argument('--dtype', choices=sorted(DTYPES), default='bfloat16')
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--repeats', type=int, default=50)
    p.add_argument('--variants', nargs='+', default=(), help='names to run (default: all)')
    p.add_argument('--out', help='also write the results as JSON here')
    p.add_argument('--static', action='store_true',
                   help='compile for sm_90a and print the static figures instead (no GPU)')
    args = p.parse_args(argv)
    if args.static:
        rows = static_metrics(static_cases(REPO))
        print('sm_90a (H100) as compiled by Triton on this machine; blocks / SM from registers, '
              'shared memory and warps against 65536 registers, 228 KB, 64 warps, 32 blocks; '
              'HGMMA = wgmma, HMMA = mma.sync instructions in the SASS\n')
        print(static_table(rows))
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(dict(args=vars(args), static=rows), f, indent=1)
        return 0
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(NO_CUDA)
    results, report = benchmark_topk_kernels(
        args.seqs, args.heads, args.tokens, args.head_dim, args.topk, DTYPES[args.dtype],
        args.warmup, args.repeats, args.variants)
    print(report)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1, default=list)
    return 0


if __name__ == '__main__':
    run_tool(main)
