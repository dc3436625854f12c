"""mixedae.apis.config: the schedule and override-key checks of a loaded config."""
import json
import re

import pytest
from mmengine.config import Config

from mixedae.apis.config import check_schedule, load_config
from mixedae.utils.errors import InvalidInputError


PRETRAIN_B = 'configs/pretrain/mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
ADE_B = 'configs/ade20k/upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py'
ADE_TINY = 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
PRETRAIN_TINY = 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py'


@pytest.mark.parametrize('config, shorten, begins', [
    (PRETRAIN_B, {'train_cfg.max_epochs': 1}, 'begins at epoch 40'),
    (PRETRAIN_B, {'train_cfg.max_epochs': 40}, 'begins at epoch 40'),
    (ADE_B, {'train_cfg.max_iters': 1500}, 'begins at iteration 1500'),
    (ADE_TINY, {'train_cfg.max_iters': 5}, 'begins at iteration 5'),
    (PRETRAIN_TINY, {'train_cfg.max_epochs': 1}, 'begins at epoch 1'),
])
def test_a_shortened_run_names_the_schedule_fields_to_set(config, shorten, begins):
    cfg = load_config(config, dict(shorten), 'none', None)
    with pytest.raises(InvalidInputError, match=f'param_scheduler\\[1\\] .* {begins}') as err:
        check_schedule(cfg)
    # the advice, applied as written, gives a schedule that fits the run
    advice = re.search(r'--cfg-options ((?:\S+=\S+ ?)+)', str(err.value)).group(1).split()
    values = {k: json.loads(v) for k, v in (a.split('=') for a in advice)}   # as DictAction
    fixed = load_config(config, {**shorten, **values}, 'none', None)
    check_schedule(fixed)
    for sched in fixed.param_scheduler:
        assert 0 <= float(sched['begin']) < list(shorten.values())[0]
    # a run one step longer than where the schedule's last phase begins needs no change
    begin = int(begins.split()[-1])
    check_schedule(load_config(config, {k: begin + 1 for k in shorten}, 'none', None))


def test_the_tiny_pretraining_dump_names_its_own_warm_up():
    cfg = load_config(PRETRAIN_TINY, None, 'none', None)
    assert cfg.warmup_epochs == 1 == cfg.param_scheduler[0]['end'] == \
        cfg.param_scheduler[1]['begin']


@pytest.mark.parametrize('key, message', [
    ('trian_cfg.max_iters', "'trian_cfg' is not a field of .*; did you mean 'train_cfg'\\?"),
    ('data_root', "'data_root' is a variable of .* changes nothing. For data stored elsewhere "
                  'set each dataset\'s root, e.g. train_dataloader.dataset.data_root=DIR'),
    ('crop_size', "'crop_size' is a variable of .*Override the fields that use it instead"),
])
def test_overrides_that_would_change_nothing_are_refused(key, message):
    with pytest.raises(InvalidInputError, match=message):
        load_config(ADE_TINY, {key: '1'}, 'none', None)


def test_runner_fields_and_config_fields_may_be_overridden():
    cfg = load_config(ADE_TINY, {'train_cfg.max_iters': 7, 'experiment_name': 'x',
                                 'randomness.seed': 3, 'compile': True,
                                 'train_dataloader.dataset.data_root': 'elsewhere'},
                      'none', None)
    assert (cfg.train_cfg.max_iters, cfg.experiment_name, cfg.randomness.seed) == (7, 'x', 3)
    assert cfg.train_dataloader.dataset.data_root == 'elsewhere'


def test_coco_protocol_a_keeps_two_checkpoints_not_every_epoch():
    for config in ('configs/coco/mask-rcnn_vit-b16-mixedae_fpn_8xb2-1x_coco.py',
                   'configs/coco/mask-rcnn_vit-b16-mixedae_fpn_8xb2-3x_coco.py'):
        hook = Config.fromfile(config).default_hooks.checkpoint
        assert (hook.interval, hook.max_keep_ckpts) == (1, 2)
