"""The top-K attention custom ops under torch.compile: fake implementations with the layouts the
kernels return (opcheck on the strided inputs the model makes), and inductor (the default
backend, C++ on CPU) compiling the homologous attention layer and a whole tiny MixedAE step with
the kernel (run by Triton's interpreter, tests/conftest.py) inside the compiled graphs."""
import importlib.util

import pytest
import torch

from mixedae.models import MixedAE
from mixedae.models.layers.homologous_attention import HomologousAttention, MixingContext
from mixedae.models.layers.topk_attention import triton_forward
from support import inductor_recording_graphs

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason='triton is not installed (CPU-only torch)')

FWD, BWD = 'mixedae.topk_attention_fwd.default', 'mixedae.topk_attention_bwd.default'


def qkv_slices(t, h, n, hd, dtype):
    """q, k, v as ``Attention.qkv_heads`` slices them out of one projection: T x H x N x hd
    views with strides (N*3*H*hd, hd, 3*H*hd, 1)."""
    qkv = torch.randn(t, n, 3, h, hd).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def permuted(t, h, n, hd, dtype):
    """q, k, v as T x N x H x hd tensors transposed to T x H x N x hd."""
    return [torch.randn(t, n, h, hd).to(dtype).transpose(1, 2) for _ in range(3)]


def contiguous(t, h, n, hd, dtype):
    return [torch.randn(t, h, n, hd).to(dtype) for _ in range(3)]


@needs_triton
@pytest.mark.parametrize('layout,dtype', [(qkv_slices, torch.float32),
                                          (qkv_slices, torch.bfloat16),
                                          (permuted, torch.float32),
                                          (contiguous, torch.float32)],
                         ids=['qkv-slices-fp32', 'qkv-slices-bf16', 'permuted', 'contiguous'])
def test_opcheck_on_strided_inputs(layout, dtype):
    """Fakes and kernels agree on shapes, dtypes and strides (all outputs contiguous) for the
    layouts the model passes; the backward also gets a transposed upstream gradient."""
    q, k, v = layout(1, 2, 20, 16, dtype)
    assert not q.is_contiguous() or layout is contiguous
    torch.library.opcheck(torch.ops.mixedae.topk_attention_fwd, (q, k, v, 5))
    with torch.no_grad():                                 # the backward has no backward
        out, lse, words = triton_forward(q, k, v, 5)
    grad = torch.randn(1, 20, 2, 16).to(dtype).transpose(1, 2)
    torch.library.opcheck(torch.ops.mixedae.topk_attention_bwd,
                          (q, k, v, out, grad, lse, words))


def grads_of(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@needs_triton
@pytest.mark.slow
def test_inductor_compiles_the_homologous_attention_layer():
    """The layer (qkv projection sliced into heads, the kernel, hr_acc from its keep bits, output
    projection) compiled by inductor in one graph equals eager: hr_acc exactly (the same keep
    bits: q and k come from the same extern matmul), the output and every gradient within
    fp32's default tolerance (inductor's C++ reductions, e.g. a bias gradient, sum in another
    order; measured: output and input gradient exact, bias gradients within 3e-6)."""
    layer = HomologousAttention(32, 2, mode='topk', topk=5, impl='triton')
    x = torch.randn(2, 20, 32, requires_grad=True)
    labels = torch.randint(0, 4, (2, 20))
    inputs = [x, *layer.parameters()]
    grad = torch.randn(2, 20, 32)
    runs = {}
    with inductor_recording_graphs() as graphs:
        for name, fn in (('eager', layer),
                         ('compiled', torch.compile(layer, backend='inductor', fullgraph=True))):
            context = MixingContext(labels=labels, num_prefix=4)
            out = fn(x, context=context)
            runs[name] = (out, context.precisions, grads_of(out, inputs, grad))
    assert len(graphs) == 2 and FWD in graphs[0] and BWD in graphs[1]      # forward, backward
    (out, precisions, grads), (c_out, c_precisions, c_grads) = runs['eager'], runs['compiled']
    assert len(c_precisions) == 1 and torch.equal(c_precisions[0], precisions[0])
    torch.testing.assert_close(c_out, out)
    for got, want in zip(c_grads, grads):
        torch.testing.assert_close(got, want)


def tiny_mixedae():
    """MixedAE at the smallest size the kernel takes (head dim 16): one encoder block with the
    kernel forced, one decoder block, the contrastive loss on."""
    return MixedAE(backbone=dict(type='mixedae.MixedViT', img_size=32, patch_size=8,
                                 embed_dim=32, depth=1, num_heads=2, group_size=4,
                                 attn_impl='triton'),
                   decoder=dict(type='mixedae.MAEDecoder', decoder_embed_dim=16, depth=1,
                                num_heads=2),
                   contrast_weight=0.1, contrast_dim=16)


@needs_triton
@pytest.mark.slow
def test_inductor_compiles_a_whole_mixedae_step_with_the_kernel():
    """model.loss (mixing assignment, encoder with the kernel, hr_acc, decoder, reconstruction
    and contrastive losses) compiled by inductor in one graph, and its backward: the losses,
    hr_acc and every parameter's gradient equal eager's within fp32's default tolerance
    (inductor fuses layer norms and reductions into C++ loops that sum in another order;
    measured: losses within 1 ulp, gradients within 2e-8)."""
    model = tiny_mixedae()
    params = [p for p in model.parameters() if p.requires_grad]
    images = torch.randn(8, 3, 32, 32)

    def step(images):
        losses = model.loss(images)
        return sum(v for k, v in losses.items() if k.startswith('loss')), losses

    runs = {}
    with inductor_recording_graphs() as graphs:
        for name, fn in (('eager', step),
                         ('compiled', torch.compile(step, backend='inductor', fullgraph=True))):
            torch.manual_seed(1)                              # the same mixing assignment
            loss, losses = fn(images)
            runs[name] = (losses, torch.autograd.grad(loss, params))
    assert len(graphs) == 2 and FWD in graphs[0] and BWD in graphs[1]
    (losses, grads), (c_losses, c_grads) = runs['eager'], runs['compiled']
    assert set(c_losses) == set(losses) == {'loss_rec', 'loss_hc', 'hr_acc'}
    for key in losses:
        torch.testing.assert_close(c_losses[key], losses[key], msg=key)
    for got, want in zip(c_grads, grads):
        torch.testing.assert_close(got, want)
