"""tools/slurm_train.sh and tools/slurm_test.sh on the test cluster, on CPU (GRES=): two tasks
started by srun, ranks from Slurm's variables, gloo; the weights and test metrics equal
tools/dist_train.sh / dist_test.sh's of the same config and seed."""
import json
import os
import subprocess

from support import free_port

from support import ROOT, assert_identical

ADE = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
#: two CPU tasks on the one node (2 CPUs): the launchers' environment for a CPU cluster
CPU_TASKS = dict(GRES='', GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1')


def run(cmd, env=None, timeout=900):
    """A launcher from the repository root; fails with its output's end unless it exits 0."""
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f'{cmd[:2]}: status {out.returncode}\n{out.stderr[-3000:]}'
    return out.stdout + out.stderr


def test_slurm_train_and_test_equal_dist_train_and_test(slurm_cluster, ade_options, tmp_path):
    options = ade_options + ['train_cfg.max_iters=6', 'train_cfg.val_interval=3']
    dist, slurm = tmp_path / 'dist', tmp_path / 'slurm'
    run(['bash', 'tools/dist_train.sh', ADE, '2', '--work-dir', str(dist), '--cfg-options',
         *options], env=dict(PORT=str(free_port())))
    run(['bash', 'tools/dist_test.sh', ADE, str(dist / 'iter_6.pth'), '2', '--work-dir',
         str(dist), '--out-metrics', str(dist / 'metrics.json'), '--cfg-options', *options],
        env=dict(PORT=str(free_port())))
    # from a login node: srun allocates the two tasks itself
    env = {**slurm_cluster.env, **CPU_TASKS, 'MASTER_PORT': str(free_port())}
    log = run(['bash', 'tools/slurm_train.sh', slurm_cluster.partition, 'train', ADE, str(slurm),
               '--cfg-options', *options], env=env)
    assert 'Distributed launcher: slurm' in log
    run(['bash', 'tools/slurm_test.sh', slurm_cluster.partition, 'test', ADE,
         str(slurm / 'iter_6.pth'), '--work-dir', str(slurm), '--out-metrics',
         str(slurm / 'metrics.json'), '--cfg-options', *options], env=env)
    assert_identical(dist / 'iter_6.pth', slurm / 'iter_6.pth', 'slurm_train.sh vs dist_train.sh')
    metrics = [json.loads((d / 'metrics.json').read_text()) for d in (dist, slurm)]
    assert metrics[0] == metrics[1] and 'mIoU' in metrics[0]
