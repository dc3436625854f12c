"""MixingBatchCheckHook units: batch size and last batch against the group size (a stand-in
runner: only the attributes the hook reads)."""
import re
from types import SimpleNamespace

import pytest
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel

from mixedae.engine.hooks import MixingBatchCheckHook


class Grouped(nn.Module):
    def __init__(self, group_size):
        super().__init__()
        self.group_size = group_size


def runner(model, batch_size, samples, drop_last=False):
    loader = SimpleNamespace(batch_size=batch_size, sampler=range(samples), drop_last=drop_last)
    return SimpleNamespace(model=model, train_dataloader=loader)


@pytest.mark.parametrize('batch,samples,drop_last', [
    (8, 64, False), (8, 68, False), (8, 66, True), (4, 4, False), (4, 2, True)])
def test_whole_groups_pass(batch, samples, drop_last):
    MixingBatchCheckHook().before_train(runner(Grouped(4), batch, samples, drop_last))


def test_a_batch_size_not_a_multiple_of_the_group_size_is_refused():
    with pytest.raises(ValueError, match=re.escape(
            'train_dataloader.batch_size=6 is not a multiple of model.backbone.group_size=4: '
            'every batch must hold whole groups of 4 images')):
        MixingBatchCheckHook().before_train(runner(Grouped(4), 6, 64))


@pytest.mark.parametrize('samples,last', [(66, 2), (65, 1), (71, 7)])
def test_a_last_batch_of_partial_groups_is_refused_unless_dropped(samples, last):
    with pytest.raises(ValueError, match=re.escape(
            f'the last batch of each epoch holds {last} images, not a multiple of '
            'model.backbone.group_size=4: set train_dataloader.drop_last=True')):
        MixingBatchCheckHook().before_train(runner(Grouped(4), 8, samples))


def test_a_model_without_groups_is_refused_by_its_type():
    with pytest.raises(TypeError, match=re.escape(
            'MixingBatchCheckHook needs a model with group_size (a MixedAE), got Linear')):
        MixingBatchCheckHook().before_train(runner(nn.Linear(2, 2), 8, 64))


def test_a_wrapped_model_is_unwrapped():
    """Under DDP the group size is the wrapped model's."""
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = Grouped(4)
    with pytest.raises(ValueError, match='batch_size=6 is not a multiple'):
        MixingBatchCheckHook().before_train(runner(wrapped, 6, 64))
    assert MixingBatchCheckHook.priority == 'VERY_HIGH'
