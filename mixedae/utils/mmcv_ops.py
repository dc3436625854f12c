"""A torchvision-backed ``mmcv._ext`` for mmcv built without its compiled ops.

mmseg's and mmdet's model packages import ``mmcv.ops``, and every ``mmcv/ops/*.py`` loads
``mmcv._ext`` and checks that its functions exist, so mmcv without compiled ops (a one-minute
build instead of about ten) cannot even import them. The suite's models reach three compiled
functions (recorded over every tiny config's training and test and a forward of every ViT-B
config): ``nms``, ``roi_align_forward`` and ``roi_align_backward``. torchvision ships CPU and
CUDA kernels for the same definitions, so :func:`install` puts a module in
``sys.modules['mmcv._ext']`` that serves those three with mmcv's calling conventions from
torchvision and answers every other name with a function that raises, when called, an error
naming the op and the switch to compiled mmcv. Where compiled mmcv is installed it is used
unchanged.

Dtypes: NMS runs in fp32 as mmcv's kernels do (fp16/bf16 boxes are upcast exactly; mmcv's
refuse them). RoIAlign runs in the input's dtype for fp16/fp32/fp64, as mmcv's do, and in fp32
for bf16 (result rounded to bf16), which mmcv refuses. ``mixedae.models.detection`` still
casts to fp32 at these calls under AMP because the compiled build needs it.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Callable

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

from .errors import UserInputError

#: the compiled functions the suite's models reach, served from torchvision
PROVIDED = ('nms', 'roi_align_forward', 'roi_align_backward')
SWITCH = 'MIXEDAE_MMCV_OPS=1 make setup'
_ROI_ALIGN_DTYPES = (torch.float16, torch.float32, torch.float64)


class MissingMmcvOpError(UserInputError, NotImplementedError):
    """An mmcv op that needs mmcv's compiled extension was called without it."""


def missing_op_message(name: str, detail: str = 'is not available') -> str:
    return (f"mmcv op '{name}' {detail}: mmcv is installed without its compiled ops and "
            f"mixedae's torchvision-backed mmcv._ext serves only {', '.join(PROVIDED)} "
            f"(mixedae/utils/mmcv_ops.py). Install mmcv with compiled ops: `{SWITCH}` "
            f"(docs/setup.md).")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        offset: int) -> torch.Tensor:
    """mmcv's ``ext_module.nms``: kept indices, in mmcv's order, ties included.

    Boxes are visited in the order of ``scores.sort(0, descending=True)`` (the call mmcv's
    kernels make); torchvision gets strictly decreasing ranks as scores so it visits them in
    that same order, and the threshold rounded to fp32 as mmcv's ``float`` argument is.
    """
    if offset != 0:
        raise MissingMmcvOpError(missing_op_message('nms', f'with offset={offset}'))
    if boxes.numel() == 0:
        return boxes.new_empty(0, dtype=torch.long)
    boxes, scores = boxes.float(), scores.float()
    order = scores.sort(0, descending=True)[1]
    ranks = torch.arange(len(order), 0, -1, dtype=torch.float32, device=boxes.device)
    threshold = float(torch.tensor(iou_threshold, dtype=torch.float32))
    with torch.autocast(boxes.device.type, enabled=False):
        keep = torch.ops.torchvision.nms(boxes[order].contiguous(), ranks, threshold)
    return order[keep]


def _average_pool_dtype(name: str, pool_mode: int, dtype: torch.dtype) -> torch.dtype:
    """The dtype RoIAlign computes in (bf16 in fp32); max pooling (mode 0) is not served."""
    if pool_mode != 1:
        raise MissingMmcvOpError(missing_op_message(name, "with pool_mode='max'"))
    return dtype if dtype in _ROI_ALIGN_DTYPES else torch.float32


def roi_align_forward(input: torch.Tensor, rois: torch.Tensor, output: torch.Tensor,
                      argmax_y: torch.Tensor, argmax_x: torch.Tensor, aligned_height: int,
                      aligned_width: int, spatial_scale: float, sampling_ratio: int,
                      pool_mode: int, aligned: bool) -> None:
    """mmcv's ``ext_module.roi_align_forward`` (average pooling): fills ``output``."""
    dtype = _average_pool_dtype('roi_align_forward', pool_mode, input.dtype)
    with torch.autocast(input.device.type, enabled=False):
        pooled = torch.ops.torchvision.roi_align(
            input.to(dtype), rois.to(dtype), spatial_scale, aligned_height, aligned_width,
            sampling_ratio, aligned)
    output.copy_(pooled)


def roi_align_backward(grad_output: torch.Tensor, rois: torch.Tensor, argmax_y: torch.Tensor,
                       argmax_x: torch.Tensor, grad_input: torch.Tensor, aligned_height: int,
                       aligned_width: int, spatial_scale: float, sampling_ratio: int,
                       pool_mode: int, aligned: bool) -> None:
    """mmcv's ``ext_module.roi_align_backward`` (average pooling): fills ``grad_input``."""
    dtype = _average_pool_dtype('roi_align_backward', pool_mode, grad_output.dtype)
    batch, channels, height, width = grad_input.shape
    with torch.autocast(grad_output.device.type, enabled=False):
        grad = torch.ops.torchvision._roi_align_backward(
            grad_output.to(dtype), rois.to(dtype), spatial_scale, aligned_height,
            aligned_width, batch, channels, height, width, sampling_ratio, aligned)
    grad_input.copy_(grad)


def _missing(name: str) -> Callable:
    def op(*args, **kwargs):
        raise MissingMmcvOpError(missing_op_message(name))
    op.__name__ = op.__qualname__ = name
    return op


class TorchvisionExt(ModuleType):
    """``mmcv._ext`` stand-in: the provided ops, and a raising function for any other name."""

    nms = staticmethod(nms)
    roi_align_forward = staticmethod(roi_align_forward)
    roi_align_backward = staticmethod(roi_align_backward)

    def __getattr__(self, name: str) -> Callable:
        if name.startswith('__') and name.endswith('__'):
            raise AttributeError(name)
        return _missing(name)


def build_ext() -> TorchvisionExt:
    """A fresh stand-in module named ``mmcv._ext``."""
    module = TorchvisionExt('mmcv._ext', __doc__.splitlines()[0])
    module.__spec__ = importlib.util.spec_from_loader('mmcv._ext', loader=None)
    return module


def install() -> None:
    """Put the stand-in in ``sys.modules['mmcv._ext']`` unless compiled mmcv ops are present.

    Idempotent; a no-op without mmcv or with its compiled extension installed (which is then
    imported by ``mmcv.ops`` as usual, and a broken one fails there, loudly).
    """
    if 'mmcv._ext' in sys.modules or importlib.util.find_spec('mmcv') is None:
        return
    if importlib.util.find_spec('mmcv._ext') is None:
        sys.modules['mmcv._ext'] = build_ext()


def compiled_mmcv_ops() -> bool:
    """Whether ``mmcv._ext`` is mmcv's compiled extension (not the torchvision stand-in)."""
    return not isinstance(importlib.import_module('mmcv._ext'), TorchvisionExt)
