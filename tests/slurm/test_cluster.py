"""The test cluster itself: jobs run with Slurm's task environment, two clusters run side by
side without seeing each other, and stopping one ends exactly its daemons."""
import os
import shutil

import pytest
from slurm_testcluster import ClusterUnavailable, new_folder, start_cluster, stop_cluster

TASK_ENV = 'echo $SLURM_PROCID/$SLURM_NTASKS/$SLURM_CLUSTER_NAME'


def test_a_job_runs_two_tasks_with_slurms_environment(slurm_cluster, tmp_path):
    out = tmp_path / 'out'
    job = slurm_cluster.submit(['-n', '2', '-o', str(out), '--wrap',
                                f"srun bash -c '{TASK_ENV}'"])
    info = slurm_cluster.wait_for_state(job, {'COMPLETED'}, timeout=60)
    assert info['ExitCode'] == '0:0' and info['Partition'] == slurm_cluster.partition
    assert int(info['NumCPUs']) == 2 <= slurm_cluster.cpus
    name = slurm_cluster.run(['scontrol', 'show', 'config']).stdout
    cluster_name = next(line.split('=', 1)[1].strip() for line in name.splitlines()
                        if line.startswith('ClusterName'))
    assert sorted(out.read_text().split()) == [f'0/2/{cluster_name}', f'1/2/{cluster_name}']


def test_two_clusters_side_by_side(slurm_cluster, tmp_path):
    second = start_cluster(new_folder())
    try:
        assert second.env['SLURM_CONF'] != slurm_cluster.env['SLURM_CONF']
        jobs = {}
        for name, cluster in (('first', slurm_cluster), ('second', second)):
            jobs[name] = cluster.submit(['-J', name, '-o', str(tmp_path / name), '--wrap',
                                         'sleep 300'])
            cluster.wait_for_state(jobs[name], {'RUNNING'}, timeout=30)
        for name, cluster in (('first', slurm_cluster), ('second', second)):
            # each cluster lists only its own job (job ids may coincide: names tell them apart)
            assert cluster.run(['squeue', '-h', '-o', '%j']).stdout.split() == [name]
        pids = second.pids
    finally:
        stop_cluster(second)
        shutil.rmtree(second.folder)
    assert all(not os.path.exists(f'/proc/{pid}') for pid in pids.values()), pids
    # the first cluster lost nothing: its job still runs, its daemons still answer
    assert slurm_cluster.job(jobs['first'])['JobState'] == 'RUNNING'
    slurm_cluster.run(['scancel', jobs['first']])
    slurm_cluster.wait_for_state(jobs['first'], {'CANCELLED'}, timeout=30)


def test_not_root_is_a_skip_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    with pytest.raises(ClusterUnavailable, match='needs root'):
        start_cluster(tmp_path)
    assert list(tmp_path.iterdir()) == []   # nothing was started or written
