"""add_preemption (tools/train.py's checkpoint hook and PreemptionHook) and the CPU process
group's rank and world size under srun."""
import pytest
import torch
from mmengine.config import Config

from mixedae.utils.errors import InvalidInputError
from mixedae.utils.launch import add_preemption, init_cpu_distributed, slurm_process_env


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
