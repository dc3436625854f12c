"""tools/benchmark_topk_kernels.py and mixedae/suite/topk_bench.py on CPU: the refusal without CUDA,
every timed launch shape's correctness in Triton's interpreter, the table's ratios."""
import importlib.util

import pytest
import torch

from support import load_tool
from mixedae.suite.topk_bench import NO_CUDA, check, inputs, timing_table, variants

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason='triton is not installed (CPU-only torch)')


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible: the tool would run')
def test_tool_refuses_without_cuda(capsys):
    assert load_tool('benchmark_topk_kernels').main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == NO_CUDA and len(err.strip().splitlines()) == 1


@needs_triton
def test_every_variant_matches_the_reference_in_the_interpreter():
    """The launch shapes the GPU run will time, at N' = 200 (one sequence, one head)."""
    q, k, v, grad = inputs(1, 1, 200, 64, torch.float32, 'cpu')
    shapes = variants(200, 64)
    assert {'default', 'fwd rows 32', 'bwd keys 128', 'atomic dQ'} <= set(shapes)
    for name, blocks in shapes.items():
        errors = check(q, k, v, grad, 50, blocks)
        assert errors['keep mismatch'] == 0, name
        assert max(errors.values()) < 1e-5, (name, errors)


def test_table_ratios_are_medians_over_sdpa():
    sdpa = dict(fwd=dict(min=40., median=50., max=60.), fwd_bwd=dict(min=300., median=350.,
                                                                     max=400.))
    row = dict(blocks=(64, 32, 64, 4, False), errors={'out': 1e-3, 'dq': 2e-3, 'keep mismatch': 0.},
               times=dict(fwd=dict(min=90., median=100., max=130.),
                          bwd=dict(min=200., median=210., max=220.),
                          fwd_bwd=dict(min=400., median=420., max=500.)))
    table = timing_table(sdpa, {'default': row})
    assert '| default | (64, 32, 64, 4, False) | 100 (90-130) | 210 (200-220) | 420 (400-500) ' \
           '| 2.00 | 1.20 | 2.0e-03 | 0.0e+00 |' in table
    assert '| SDPA, all keys | – | 50 (40-60) | – | 350 (300-400) |' in table
