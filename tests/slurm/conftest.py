"""A real single-node Slurm cluster for the tests in ``tests/slurm`` (``make test-slurm``).

Every test collected under ``tests/slurm`` gets the ``slurm`` and ``slow`` markers (``make test``
leaves them out). Use the session fixture ``slurm_cluster``::

    def test_job(slurm_cluster, tmp_path):
        job = slurm_cluster.submit(['--wrap', 'hostname', '-o', str(tmp_path / 'out')])
        info = slurm_cluster.wait_for_state(job, {'COMPLETED'}, timeout=60)
        subprocess.run(['squeue'], env=slurm_cluster.env)   # any client: SLURM_CONF, PATH

``slurm_cluster`` is a :class:`SlurmCluster`: ``env`` (the environment for Slurm's clients and
jobs: ``SLURM_CONF`` of this cluster, ``PATH`` with the clients, no inherited ``SLURM_*``),
``partition``, ``cpus`` (the node's CPUs), ``log_dir`` (munged.log, slurmctld.log, slurmd.log),
``run(args)`` (a client command), ``submit(sbatch_args)`` (the job id), ``job(job_id)``
(``scontrol show job`` as a dict) and ``wait_for_state(job_id, states, timeout)``.

The module fixture ``ade_options`` gives ``--cfg-options`` for the tiny ADE20K config on
generated data.

How the cluster is made private and quick: ``tests/slurm/slurm_testcluster.py``.
"""
import os
import shutil
import subprocess
import sys

import pytest
from slurm_testcluster import ClusterUnavailable, new_folder, start_cluster, stop_cluster

from support import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.hookimpl(tryfirst=True)   # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def slurm_cluster(request):
    """The session's single-node Slurm cluster (see the module docstring)."""
    folder = new_folder()
    try:
        cluster = start_cluster(folder)
    except ClusterUnavailable as err:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f'no Slurm test cluster: {err}')
    yield cluster
    stop_cluster(cluster)
    if request.session.testsfailed:
        print(f'\nSlurm test cluster kept for its logs: {folder}')
    else:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='module')
def ade_options(tmp_path_factory):
    """``--cfg-options`` for the tiny ADE20K config on generated data (12 train, 2 val
    scenes, tools/make_synthetic_data.py), logging every iteration."""
    out = tmp_path_factory.mktemp('data') / 'synthetic'
    done = subprocess.run([sys.executable, 'tools/make_synthetic_data.py', str(out),
                           '--num-train', '12', '--num-val', '2'], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    root = out / 'ade'
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')
            ] + ['default_hooks.logger.interval=1']
