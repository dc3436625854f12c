"""Check, before the first batch, that every training batch holds whole mixing groups."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mixedae.registry import HOOKS
from mixedae.utils.errors import InvalidInputError


@HOOKS.register_module()
class MixingBatchCheckHook(Hook):
    """Refuse a pretraining run whose batches cannot be cut into groups of G images.

    G has one source, ``model.backbone.group_size``; the images per GPU have one source,
    ``train_dataloader.batch_size``. A mismatch would otherwise surface at the first (or the
    last) batch of the run.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        g = getattr(model, 'group_size', None)
        if g is None:
            raise TypeError(f'MixingBatchCheckHook needs a model with group_size (a MixedAE), '
                            f'got {type(model).__name__}')
        loader = runner.train_dataloader
        batch = loader.batch_size
        if batch % g:
            raise InvalidInputError(f'train_dataloader.batch_size={batch} is not a multiple of '
                                    f'model.backbone.group_size={g}: every batch must hold whole '
                                    f'groups of {g} images')
        last = len(loader.sampler) % batch
        if not loader.drop_last and last % g:
            raise InvalidInputError(f'the last batch of each epoch holds {last} images, not a '
                                    f'multiple of model.backbone.group_size={g}: set '
                                    'train_dataloader.drop_last=True')
