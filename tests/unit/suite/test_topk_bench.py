"""tools/benchmark_topk_kernels.py and mixedae/suite/topk_bench.py on CPU: the refusal without CUDA,
every timed launch shape's correctness in Triton's interpreter, the table's ratios, and the
static sm_90a figures (compiled without a GPU)."""
import importlib.util
import os

import pytest
import torch

from support import ROOT, load_tool
from mixedae.suite.topk_bench import (NO_CUDA, PRODUCTION_CONFIG, StaticCase, blocks_per_sm,
                                      check, config_shape, default_blocks, inputs,
                                      static_metrics, static_table, timing_table, variants)
from mixedae.utils.errors import DeviceUnavailableError

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason='triton is not installed (CPU-only torch)')


def sm90_compiler_missing():
    """Why Triton cannot compile for sm_90 here (no triton, or no bundled ptxas), or ''."""
    spec = importlib.util.find_spec('triton')
    if spec is None:
        return 'triton is not installed (CPU-only torch)'
    ptxas = os.path.join(os.path.dirname(spec.origin), 'backends', 'nvidia', 'bin', 'ptxas')
    return '' if os.access(ptxas, os.X_OK) else f'no executable ptxas at {ptxas}'


def test_tool_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(DeviceUnavailableError) as refused:
        load_tool('benchmark_topk_kernels').main([])
    assert str(refused.value) == NO_CUDA and len(NO_CUDA.splitlines()) == 1


@needs_triton
def test_every_variant_matches_the_reference_in_the_interpreter():
    """The launch shapes the GPU run will time, at N' = 200 (one sequence, one head)."""
    q, k, v, grad = inputs(1, 1, 200, 64, torch.float32, 'cpu')
    shapes = variants(200, 64)
    assert {'default', 'fwd warps 4', 'dkdv keys 128', 'dq keys 32', 'bwd warps 8'} <= set(shapes)
    for name, blocks in shapes.items():
        errors = check(q, k, v, grad, 50, blocks)
        assert errors['keep mismatch'] == 0, name
        assert max(errors.values()) < 1e-5, (name, errors)


def test_table_ratios_are_medians_over_sdpa():
    sdpa = dict(fwd=dict(min=40., median=50., max=60.), fwd_bwd=dict(min=300., median=350.,
                                                                     max=400.))
    row = dict(blocks=(64, 8, 64, 64, 64, 64, 4), errors={'out': 1e-3, 'dq': 2e-3,
                                                          'keep mismatch': 0.},
               times=dict(fwd=dict(min=90., median=100., max=130.),
                          bwd=dict(min=200., median=210., max=220.),
                          fwd_bwd=dict(min=400., median=420., max=500.)))
    table = timing_table(sdpa, {'default': row})
    assert '| default | (64, 8, 64, 64, 64, 64, 4) | 100 (90-130) | 210 (200-220) | ' \
           '420 (400-500) | 2.00 | 1.20 | 2.0e-03 | 0.0e+00 |' in table
    assert '| SDPA, all keys | – | 50 (40-60) | – | 350 (300-400) |' in table


@pytest.mark.parametrize('config,shape', [
    (PRODUCTION_CONFIG, (200, 50)),                                               # G = 4
    ('configs/pretrain/ablations/mixedae-k25_vit-base-p16_8xb512-coslr-300e_in1k.py', (200, 25)),
    ('configs/pretrain/ablations/mixedae-r2_vit-base-p16_8xb512-coslr-300e_in1k.py', (198, 99)),
    ('configs/pretrain/ablations/mixedae-r3_vit-base-p16_8xb512-coslr-300e_in1k.py', (228, 76)),
])
def test_config_shape_is_patches_plus_class_tokens_and_the_backbones_k(config, shape):
    assert config_shape(os.path.join(ROOT, config)) == shape


@pytest.mark.parametrize('registers,warps,shared,expected', [
    (255, 4, 40960, (2, 'registers')),       # 255 -> 8192 per warp: 8 warps' worth
    (128, 4, 0, (4, 'registers')),
    (64, 4, 0, (8, 'registers')),
    (32, 1, 0, (32, 'blocks')),
    (40, 8, 0, (6, 'registers')),            # 40 x 32 = 1280 -> 1280 per warp: 51 warps
    (64, 4, 100 * 1024, (2, 'shared')),      # 228 KB / (100 KB + 1 KB reserved)
    (16, 16, 0, (4, 'warps')),              # 16 x 32 = 512 per warp: 128 warps by registers
])
def test_blocks_per_sm_uses_the_h100_limits(registers, warps, shared, expected):
    assert blocks_per_sm(registers, warps, shared) == expected


@pytest.mark.skipif(sm90_compiler_missing() != '', reason=sm90_compiler_missing() or 'n/a')
@pytest.mark.slow
def test_production_kernels_compile_for_sm90a_without_spills_and_with_wgmma():
    """The production launch (N' and K from the config, bf16, default blocks) compiled as the
    JIT would for an H100: no kernel spills, and every product is a wgmma (HGMMA in the SASS,
    no mma.sync HMMA). Compiled in a subprocess without TRITON_INTERPRET."""
    n, topk = config_shape(os.path.join(ROOT, PRODUCTION_CONFIG))
    rows = static_metrics([StaticCase('production', n, topk, 'bf16', default_blocks(n, 64))])
    assert [r['kernel'] for r in rows] == ['fwd_kernel', 'dq_kernel', 'dkdv_kernel']
    for r in rows:
        assert r['spill_stores'] == r['spill_loads'] == 0, r
        assert r['hgmma'] > 0 and r['hmma'] == 0, r
        assert 0 < r['registers'] <= 255 and r['blocks_per_sm'] >= 1, r
    assert '| production | fwd_kernel | bf16 | 200 | 50 | 64 x 256 | 8 |' in static_table(rows)
