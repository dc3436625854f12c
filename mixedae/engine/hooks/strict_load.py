"""Refuse a ``load_from`` checkpoint that does not cover the model."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper

from mixedae.registry import HOOKS
from mixedae.models.backbones.loading import describe_keys, key_coverage
from mixedae.utils.checkpoint import CheckpointError, state_dict_of


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Check that ``load_from`` holds exactly the model's weights before they are loaded.

    MMEngine loads ``load_from`` non-strictly: the matching keys are loaded, the rest of the
    model keeps its initialisation and the mismatch is only a console warning. For evaluation
    (``tools/test.py``) and for fine-tuning from a full checkpoint that is a silent wrong result,
    so missing or unexpected keys raise a :class:`CheckpointError` (first keys and counts), also
    written to the work-dir log. ``allow_partial=True`` (``--allow-partial``) logs the same
    report as a warning and loads what matches. Resuming is not checked (the run's own files).
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_partial: bool = False) -> None:
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner._resume:          # the run's own checkpoint (private: Runner has no getter)
            return
        path = runner._load_from
        model = runner.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        missing, unexpected = key_coverage(model.state_dict(), state_dict_of(checkpoint, path))
        if not missing and not unexpected:
            return
        report = (f'{path} does not cover the model: missing keys {describe_keys(missing)}; '
                  f'unexpected keys {describe_keys(unexpected)}')
        if self.allow_partial:
            runner.logger.warning(f'{report} (loading what matches: --allow-partial)')
            return
        report += ('. Pass the checkpoint the config was trained into (or --allow-partial to '
                   'load the matching keys on purpose)')
        runner.logger.error(report)
        raise CheckpointError(report)
