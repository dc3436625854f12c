"""StrictLoadHook units: each kind of key mismatch on its own, wrappers, resume, --allow-partial
(a stand-in runner: only the attributes the hook reads)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel, BaseTTAModel, MMDistributedDataParallel

from mixedae.engine.hooks import StrictLoadHook
from mixedae.utils.checkpoint import CheckpointError
from support import Log


def runner(model=None, resume=False):
    return SimpleNamespace(_resume=resume, _load_from='ckpt.pth', model=model or nn.Linear(4, 1),
                           logger=Log())


def weights(**tensors):
    return dict(state_dict=tensors, meta=dict())


FULL = dict(weight=torch.zeros(1, 4), bias=torch.zeros(1))


def test_a_checkpoint_holding_exactly_the_model_passes_silently():
    run = runner()
    StrictLoadHook().after_load_checkpoint(run, weights(**FULL))
    StrictLoadHook().after_load_checkpoint(run, {'module.weight': FULL['weight'],
                                                 'module.bias': FULL['bias']})   # DDP prefix
    assert run.logger.lines == []


@pytest.mark.parametrize('ckpt,report,matching', [
    (weights(weight=FULL['weight']), 'missing keys 1: bias; unexpected keys 0', 1),
    (weights(**FULL, extra=torch.zeros(1)), 'missing keys 0; unexpected keys 1: extra', 2),
    (weights(weight=FULL['weight'], extra=torch.zeros(1)),
     'missing keys 1: bias; unexpected keys 1: extra', 1),
], ids=['missing-only', 'unexpected-only', 'both'])
def test_any_mismatch_alone_is_refused_and_logged(ckpt, report, matching):
    run = runner()
    with pytest.raises(CheckpointError) as err:
        StrictLoadHook().after_load_checkpoint(run, ckpt)
    assert str(err.value) == (f'ckpt.pth does not cover the model: {report}. Pass the '
                              'checkpoint the config was trained into, or --allow-partial to '
                              f"load the {matching} matching of the model's 2 tensors on "
                              'purpose')
    assert run.logger.lines == [('error', str(err.value))]


class Segmentor(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)


def test_a_backbone_checkpoint_as_load_from_leads_to_load_backbone():
    run = runner(Segmentor())
    with pytest.raises(CheckpointError) as err:
        StrictLoadHook().after_load_checkpoint(run, weights(weight=torch.zeros(3, 4),
                                                            bias=torch.zeros(3)))
    assert str(err.value).endswith(
        "It is a backbone checkpoint (2 of the backbone's 2 tensors by name, 0 of the model's "
        '4 as load_from): start the backbone from it with --load-backbone ckpt.pth instead of '
        'load_from')
    assert '--allow-partial' not in str(err.value)


def test_allow_partial_warns_with_the_same_report_and_returns():
    run = runner()
    StrictLoadHook(allow_partial=True).after_load_checkpoint(run, weights(weight=FULL['weight']))
    assert run.logger.lines == [
        ('warning', 'ckpt.pth does not cover the model: missing keys 1: bias; unexpected keys 0 '
                    '(loading what matches: --allow-partial)')]
    assert not StrictLoadHook().allow_partial


def test_resuming_is_not_checked():
    run = runner(resume=True)
    StrictLoadHook().after_load_checkpoint(run, weights(other=torch.zeros(1)))
    assert run.logger.lines == []


class Net(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.fc(inputs)


class TTA(BaseTTAModel):
    def merge_preds(self, data_samples_list):
        return data_samples_list[0]


def test_the_wrapped_model_is_compared_not_its_wrapper():
    """A test-time-augmentation wrapper (and DDP) hold the model under ``module.``: the
    checkpoint of the bare model covers it."""
    wrapped = TTA(module=Net())
    assert set(wrapped.state_dict()) == {'module.fc.weight', 'module.fc.bias'}
    run = runner(model=wrapped)
    StrictLoadHook().after_load_checkpoint(run, weights(**{'fc.' + k: v for k, v in FULL.items()}))
    assert run.logger.lines == []
    with pytest.raises(CheckpointError, match='missing keys 1: fc.bias;'):
        StrictLoadHook().after_load_checkpoint(run, weights(**{'fc.weight': FULL['weight']}))


def test_a_ddp_wrapped_model_is_unwrapped():
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = nn.Linear(4, 1)
    run = runner(model=wrapped)
    StrictLoadHook().after_load_checkpoint(run, weights(**FULL))
    assert run.logger.lines == []


def test_a_file_without_weights_is_named():
    with pytest.raises(CheckpointError, match=r'^ckpt\.pth: a checkpoint is a dict of tensors'):
        StrictLoadHook().after_load_checkpoint(runner(), dict(state_dict=dict(w=1)))


def test_runs_before_the_other_hooks():
    assert StrictLoadHook.priority == 'VERY_HIGH'
