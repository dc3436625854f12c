"""A checkpoint hook that never leaves a work dir without a resumable checkpoint.

MMEngine's ``CheckpointHook`` deletes the oldest kept checkpoint *before* writing the new one
and writes ``last_checkpoint`` with a plain ``open()``: a kill during a save can leave no
complete checkpoint (``max_keep_ckpts=1``) or an empty ``last_checkpoint``. Here the new
checkpoint is written first (atomically: ``mixedae.utils.io.AtomicLocalBackend``), then
``last_checkpoint`` (atomically), and only then are the outdated checkpoints removed.
"""
from __future__ import annotations

import os.path as osp
from typing import List

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mixedae.registry import HOOKS
from mixedae.utils.io import atomic_write


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) with crash-safe saving and rotation; also saves on
    demand in the middle of an epoch (:meth:`save_now`, used by ``PreemptionHook``)."""

    def _rotate(self, runner, step: int) -> List[str]:
        """Record ``step`` among the kept checkpoints; the paths that fall out of the window."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []
        stale = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            stale.append(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft())))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return stale

    def _save_file(self, runner, filename: str, meta: dict) -> str:
        """Save the run to ``<out_dir>/filename`` and point ``last_checkpoint`` at it."""
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args,
                               **self.args)
        if is_main_process():
            with atomic_write(osp.join(runner.work_dir, 'last_checkpoint')) as f:
                f.write(self.last_ckpt)
        return self.last_ckpt

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        stale = self._rotate(runner, step)
        self._save_file(runner, self.filename_tmpl.format(step), meta)
        if is_main_process():
            for path in stale:
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
                elif self.file_backend.isdir(path):   # a checkpoint saved by DeepSpeed
                    self.file_backend.rmtree(path)

    def save_now(self, runner) -> str:
        """Checkpoint the run as it stands after the current training iteration; its path.

        Iteration-based: the regular ``iter_N.pth`` (kept and rotated like the others; not
        written twice when this iteration already saved one). Epoch-based: ``iter_N.pth``
        outside the rotation, whose meta records the unfinished epoch, so resuming replays the
        epoch's first batches without training on them (``RNGStateHook``).
        """
        step = runner.iter + 1
        meta = dict(epoch=runner.epoch, iter=step)
        if self.by_epoch:
            return self._save_file(runner, f'iter_{step}.pth', meta)
        if self.last_ckpt != self.file_backend.join_path(self.out_dir,
                                                         self.filename_tmpl.format(step)):
            self._save_checkpoint_with_step(runner, step, meta)
        return self.last_ckpt
