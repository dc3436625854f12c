"""Stop a diverging run at once and keep its last good checkpoint."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint

from mixedae.registry import HOOKS
from mixedae.utils.checkpoint import CheckpointError, non_finite_tensors


class NonFiniteError(RuntimeError):
    """A training value (loss term, gradient norm, weights) became NaN or infinite."""


def _bad_scalars(values: Dict[str, object]) -> Dict[str, float]:
    """The entries of ``values`` (tensors or numbers) that are not finite, as floats."""
    bad = {}
    for name, value in values.items():
        number = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) \
            else float(value)
        if not math.isfinite(number):
            bad[name] = number
    return bad


def _non_finite_parameters(model: torch.nn.Module) -> List[str]:
    """Names of parameters holding NaN/Inf; one fused norm over all of them in the common case."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params or torch.isfinite(torch.nn.utils.get_total_norm(params)):
        return []
    # the total norm can also overflow for finite weights: name the tensors that really are bad
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Refuse to go on, save or resume with non-finite values.

    After every training iteration the loss terms the model returns, the gradient norm (when
    the optimizer wrapper clips gradients) and the weights are checked; the first non-finite
    value stops the run with a :class:`NonFiniteError` naming the iteration, the terms and the
    last good checkpoint, before any checkpoint of this iteration is written. A checkpoint with
    non-finite tensors is never saved, and one given to ``--resume`` / ``load_from`` is refused.

    Args:
        max_bad_steps: consecutive iterations with a non-finite loss or gradient norm that are
            tolerated. Under fp16 loss scaling (``--amp``) an overflowing step is skipped and the
            scale lowered, which is normal; a few such steps in a row are expected. Non-finite
            weights always stop the run.
    """

    priority = 'ABOVE_NORMAL'   # before CheckpointHook (VERY_LOW) decides to save

    def __init__(self, max_bad_steps: int = 0) -> None:
        if not isinstance(max_bad_steps, int) or max_bad_steps < 0:
            raise ValueError(f'NonFiniteGuardHook: max_bad_steps must be an int >= 0, '
                             f'got {max_bad_steps!r}')
        self.max_bad_steps = max_bad_steps
        self.bad_steps = 0

    def _stop(self, runner, message: str) -> None:
        last = runner.message_hub.get_info('last_ckpt') or 'none saved yet'
        message = (f'{message}. Stopping the run; nothing from this iteration is saved. '
                   f'Last good checkpoint: {last}')
        runner.logger.error(message)
        raise NonFiniteError(message)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        where = f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'
        bad = _bad_scalars(outputs or {})
        wrapper = runner.optim_wrapper
        if getattr(wrapper, 'clip_grad_kwargs', None) and \
                'train/grad_norm' in runner.message_hub.log_scalars:
            bad.update(_bad_scalars(
                {'grad_norm': runner.message_hub.get_scalar('train/grad_norm').current()}))
        if bad:
            self.bad_steps += 1
            terms = ', '.join(f'{k}={v}' for k, v in bad.items())
            if self.bad_steps > self.max_bad_steps:
                self._stop(runner, f'non-finite values at {where}: {terms} '
                           f'({self.bad_steps} bad step(s) in a row, max_bad_steps='
                           f'{self.max_bad_steps})')
            runner.logger.warning(f'non-finite values at {where}: {terms}; tolerated '
                                  f'({self.bad_steps}/{self.max_bad_steps} bad steps in a row)')
        else:
            self.bad_steps = 0
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad_params = _non_finite_parameters(model)
        if bad_params:
            self._stop(runner, f'non-finite weights after {where}: {len(bad_params)} '
                       f'parameter(s), e.g. {", ".join(bad_params[:5])}')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = non_finite_tensors({k: checkpoint.get(k) for k in ('state_dict', 'optimizer')})
        if bad:
            self._stop(runner, f'refusing to save a checkpoint at iteration {runner.iter} with '
                       f'{len(bad)} non-finite tensor(s), e.g. {", ".join(bad[:5])}')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = non_finite_tensors({k: checkpoint.get(k) for k in ('state_dict', 'optimizer')})
        if bad:
            # the file Runner.load_or_resume chose (the runner does not pass it to hooks)
            path = runner._load_from or find_latest_checkpoint(runner.work_dir)
            raise CheckpointError(f'{path}: {len(bad)} non-finite tensor(s) (NaN/Inf), e.g. '
                                  f'{", ".join(bad[:5])}; refusing to load it. Use an earlier '
                                  'checkpoint of the run.')
