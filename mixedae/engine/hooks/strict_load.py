"""Refuse a ``load_from`` checkpoint that does not cover the model."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper

from mixedae.registry import HOOKS
from mixedae.utils.checkpoint import CheckpointError, state_dict_of
from mixedae.utils.key_report import describe_keys, key_coverage


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
        weights, state = model.state_dict(), state_dict_of(checkpoint, path)
        missing, unexpected = key_coverage(weights, state)
        if not missing and not unexpected:
            return
        report = (f'{path} does not cover the model: missing keys {describe_keys(missing)}; '
                  f'unexpected keys {describe_keys(unexpected)}')
        if self.allow_partial:
            runner.logger.warning(f'{report} (loading what matches: --allow-partial)')
            return
        report += '. ' + refusal_advice(path, weights, state)
        runner.logger.error(report)
        raise CheckpointError(report)


def refusal_advice(path: str, weights: dict, state: dict) -> str:
    """What to do with a ``load_from`` checkpoint ``path`` (``state``) that does not cover a
    model with ``weights``: a backbone checkpoint (the model's ``backbone.`` keys without the
    prefix), of which ``load_from`` would load nothing, is started from with
    ``--load-backbone``; anything else is named with its matching count and
    ``--allow-partial``."""
    backbone = {k[len('backbone.'):] for k in weights if k.startswith('backbone.')}
    matching = len(set(state) & set(weights))
    as_backbone = len(set(state) & backbone)
    if as_backbone > matching:
        return (f'It is a backbone checkpoint ({as_backbone} of the backbone\'s {len(backbone)} '
                f'tensors by name, {matching} of the model\'s {len(weights)} as load_from): '
                f'start the backbone from it with --load-backbone {path} instead of load_from')
    return (f'Pass the checkpoint the config was trained into, or --allow-partial to load the '
            f'{matching} matching of the model\'s {len(weights)} tensors on purpose')
