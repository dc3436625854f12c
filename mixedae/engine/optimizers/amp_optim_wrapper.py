"""MMEngine's ``AmpOptimWrapper``, also on CPU (bf16), without loss scaling in bf16.

    optim_wrapper = dict(type='mixedae.AmpOptimWrapper', dtype='bfloat16', optimizer=...)

Everything that runs per step (``optim_context``'s autocast, ``backward``, ``step``,
``state_dict``) is MMEngine's; the construction differs, and the first step logs the autocast
state it measured inside the context (the line ``AUTOCAST_LOG`` starts; reports read it).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper as MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper

from mixedae.registry import OPTIM_WRAPPERS
from mixedae.utils.errors import InvalidInputError

AMP_DTYPES = ('bfloat16', 'float16')
#: start of the line logged once per run with the measured autocast state
AUTOCAST_LOG = 'AmpOptimWrapper: first step ran under'


@OPTIM_WRAPPERS.register_module()
class AmpOptimWrapper(MMEngineAmpOptimWrapper):
    """Args:
        dtype: autocast dtype, ``'bfloat16'`` (default) or ``'float16'``.
        loss_scale: MMEngine's ``loss_scale`` (``'dynamic'``, a float or GradScaler kwargs).
            None: dynamic loss scaling in fp16, none in bf16 (fp32's exponent range: gradients
            neither underflow nor overflow for want of a scale).
        **kwargs: ``OptimWrapper``'s (optimizer, accumulative_counts, clip_grad).

    On a CPU-only machine it autocasts to bf16 (MMEngine's wrapper refuses CPU); fp16 (which
    MMEngine's autocast allows on GPUs only) and loss scaling are refused there.
    """

    def __init__(self, loss_scale: Union[None, str, float, dict] = None,
                 dtype: str = 'bfloat16', **kwargs) -> None:
        if dtype not in AMP_DTYPES:
            raise InvalidInputError(f'AmpOptimWrapper: dtype must be one of {AMP_DTYPES}, '
                                    f'got {dtype!r}')
        self._autocast_logged = False
        if get_device() != 'cpu':
            if loss_scale is None:
                loss_scale = 'dynamic' if dtype == 'float16' else dict(enabled=False)
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
            return
        if dtype == 'float16':
            raise InvalidInputError('AmpOptimWrapper: fp16 autocast needs a GPU (MMEngine '
                                    "autocasts CPUs in bf16 only); on CPU use dtype 'bfloat16' "
                                    '(tools/train.py --amp)')
        if loss_scale is not None:
            raise InvalidInputError(f'AmpOptimWrapper: loss_scale={loss_scale!r} on CPU: bf16 '
                                    'needs no loss scaling; leave loss_scale unset')
        # MMEngine's __init__ asserts a GPU before anything else, so its fields are set here:
        # a disabled GradScaler passes losses, gradients and steps through unchanged.
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param: Optional[float] = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
        print_log('AmpOptimWrapper: no GPU visible, training under bf16 autocast on CPU',
                  logger='current')

    @contextmanager
    def optim_context(self, model: torch.nn.Module) -> Iterator[None]:
        """MMEngine's context (autocast, gradient sync); the first one logs what autocast is
        actually doing inside it, e.g. ``... first step ran under bfloat16 autocast on cuda``."""
        with super().optim_context(model):
            if not self._autocast_logged:
                self._autocast_logged = True
                device = get_device().split(':')[0]
                state = (f'{str(torch.get_autocast_dtype(device)).split(".")[-1]} autocast'
                         if torch.is_autocast_enabled(device) else 'no autocast (fp32)')
                print_log(f'{AUTOCAST_LOG} {state} on {device}', logger='current')
            yield


AMP_WRAPPERS = ('OptimWrapper', 'AmpOptimWrapper', 'mixedae.AmpOptimWrapper')


def configure_amp(cfg: Config, dtype: Optional[str]) -> str:
    """``tools/train.py --amp``: train ``cfg`` through mixedae.AmpOptimWrapper in ``dtype``
    (None: the config's, else bf16); returns the line saying what autocast will do."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper not in AMP_WRAPPERS:
        raise InvalidInputError(f'--amp needs optim_wrapper.type in {AMP_WRAPPERS}, '
                                f'got {wrapper!r}')
    dtype = dtype or cfg.optim_wrapper.get('dtype') or 'bfloat16'
    if get_device() == 'cpu':
        if dtype == 'float16':
            raise InvalidInputError('--amp-dtype float16: fp16 autocast needs a GPU and none is '
                                    'visible; on CPU --amp trains in bfloat16 (leave --amp-dtype '
                                    'out)')
        line = '--amp: no GPU visible, so bf16 autocast on CPU (mixedae.AmpOptimWrapper)'
    else:
        scaling = 'dynamic loss scaling' if dtype == 'float16' else 'no loss scaling'
        line = f'--amp: {dtype} autocast on {get_device()}, {scaling} (mixedae.AmpOptimWrapper)'
    cfg.optim_wrapper.type = 'mixedae.AmpOptimWrapper'
    cfg.optim_wrapper.dtype = dtype
    return line
