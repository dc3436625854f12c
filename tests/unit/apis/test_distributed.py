"""mixedae.apis.distributed: the CPU process group's rank and world size under srun, and the
launchers a CPU run refuses (its end after the run: test_close_distributed.py)."""
import pytest
import torch

from mixedae.apis.distributed import first_slurm_host, init_cpu_distributed, slurm_process_env
from mixedae.utils.errors import InvalidInputError


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
