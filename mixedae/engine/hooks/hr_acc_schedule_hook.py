"""Compute ``hr_acc`` only on the training iterations whose logged value uses it."""
from __future__ import annotations

from mmengine.hooks import Hook, LoggerHook
from mmengine.model import is_model_wrapper

from mixedae.registry import HOOKS


def logs_within(batch_idx: int, epoch_len: int, interval: int, window: int,
                ignore_last: bool = True) -> bool:
    """Whether MMEngine's ``LoggerHook`` logs at one of the iterations batch_idx, ...,
    batch_idx + window - 1, counted in epochs of ``epoch_len`` batches: it logs after every
    ``interval``-th batch of an epoch and after the epoch's last one (unless ``ignore_last`` and
    the epoch is longer than ``interval``)."""
    for i in range(batch_idx, batch_idx + window):
        j = i % epoch_len                                             # index in its epoch
        if (j + 1) % interval == 0 or (
                j + 1 == epoch_len and (not ignore_last or epoch_len <= interval)):
            return True
    return False


@HOOKS.register_module()
class HrAccScheduleHook(Hook):
    """Tell the model (``set_hr_acc``) before each training iteration whether to compute
    ``hr_acc``: only on the iterations after which ``LoggerHook`` logs.

    MMEngine's ``LogProcessor`` logs the current value of a scalar whose name does not match its
    ``mean_pattern`` (loss, time, grad_norm), so ``hr_acc`` from the logged iteration alone gives
    the same log; the other iterations skip the top-K layers' label counts. Should the pattern
    match ``hr_acc``, the iterations of the smoothing window before each log compute it too; with
    a window that is not a number of iterations ('epoch', 'global') or a ``custom_cfg`` entry for
    ``hr_acc``, every iteration does. Without a ``LoggerHook`` it is never computed.
    """

    priority = 'NORMAL'

    def needs_hr_acc(self, runner, batch_idx: int) -> bool:
        logger = next((h for h in runner.hooks if isinstance(h, LoggerHook)), None)
        if logger is None:
            return False
        processor = runner.log_processor
        window = processor.window_size if processor.mean_pattern.search('hr_acc') else 1
        if not isinstance(window, int) or any(
                c.get('data_src') == 'hr_acc' for c in processor.custom_cfg or []):
            return True
        return logs_within(batch_idx, len(runner.train_dataloader), logger.interval, window,
                           logger.ignore_last)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.set_hr_acc(self.needs_hr_acc(runner, batch_idx))
