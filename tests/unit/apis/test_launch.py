"""Run set-up: add_preemption (tools/train.py's checkpoint hook and PreemptionHook), the CPU
process group's rank and world size under srun, the schedule and override-key checks."""
import json
import re

import pytest
import torch
from mmengine.config import Config

from mixedae.utils.errors import InvalidInputError
from mixedae.apis.launch import (add_preemption, check_schedule, first_slurm_host,
                                 init_cpu_distributed, load_config, slurm_process_env)


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


SLURM_TASK = dict(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1',
                  SLURM_NODELIST='node[7-8]')


def test_slurm_task_variables_become_torch_distributed_ones():
    hosts = []
    env = slurm_process_env(SLURM_TASK, lambda nodelist: hosts.append(nodelist) or 'node7')
    assert env == dict(RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node7',
                       MASTER_PORT='29500')
    assert hosts == ['node[7-8]']
    # MASTER_ADDR and MASTER_PORT already set win, as in MMEngine's slurm launcher
    env = slurm_process_env({**SLURM_TASK, 'MASTER_ADDR': '10.0.0.2', 'MASTER_PORT': '29611'},
                            lambda nodelist: pytest.fail('asked Slurm for the host'))
    assert (env['MASTER_ADDR'], env['MASTER_PORT']) == ('10.0.0.2', '29611')


def test_slurm_launcher_outside_srun_says_what_is_missing():
    task = {k: v for k, v in SLURM_TASK.items() if k not in ('SLURM_PROCID', 'SLURM_LOCALID')}
    with pytest.raises(InvalidInputError, match='--launcher slurm: SLURM_PROCID, SLURM_LOCALID '
                       'not set; start the processes with srun'):
        slurm_process_env(task, lambda nodelist: 'node7')


def test_cpu_launchers_other_than_torchrun_and_srun_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(InvalidInputError, match='--launcher mpi needs GPUs'):
        init_cpu_distributed('mpi')


@pytest.mark.parametrize('nodelist, first', [
    ('node7', 'node7'), ('node[01-04,7],gpu1', 'node01'), ('gpu1,node[2-3]', 'gpu1'),
    ('rack[1-2]-n[3-4]', 'rack1-n3'), ('a-b[10,12]', 'a-b10')])
def test_the_first_host_of_a_slurm_node_list(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_a_malformed_node_list_says_what_to_set():
    with pytest.raises(InvalidInputError, match="SLURM_NODELIST 'node\\[1-2' is not a Slurm "
                                                'node list; set MASTER_ADDR'):
        first_slurm_host('node[1-2')
