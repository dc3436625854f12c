"""mixedae.apis.hooks: add_preemption (tools/train.py's checkpoint hook and PreemptionHook).
The visualizer backends are tested with the configs they build (tests/integration/
test_first_hour.py)."""
import pytest
from mmengine.config import Config

from mixedae.apis.hooks import add_preemption


def test_checkpoint_hook_becomes_atomic_and_preemption_is_added():
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5,
                                                         max_keep_ckpts=2)),
                      custom_hooks=[dict(type='mixedae.RNGStateHook')]))
    add_preemption(cfg)
    assert cfg.default_hooks.checkpoint == dict(type='mixedae.AtomicCheckpointHook', interval=5,
                                                max_keep_ckpts=2)
    assert [h['type'] for h in cfg.custom_hooks] == ['mixedae.RNGStateHook',
                                                     'mixedae.PreemptionHook']


@pytest.mark.parametrize('hooks, message', [
    ({}, 'default_hooks.checkpoint is missing'),
    (dict(checkpoint=dict(type='MyCheckpointHook')),
     "default_hooks.checkpoint.type is 'MyCheckpointHook'"),
])
def test_configs_it_cannot_make_safe_are_named(hooks, message):
    with pytest.raises(ValueError, match=message):
        add_preemption(Config(dict(default_hooks=hooks)))
