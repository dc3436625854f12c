"""mixedae.apis.args: the launch rank that decides whether a process shows Python warnings."""
import argparse
import warnings

import pytest

from mixedae.apis.args import add_launch_args, launch_rank, parse_launch_args


@pytest.mark.parametrize('launcher, environ, rank', [
    ('none', {'RANK': '3'}, 0),                       # not launched: rank 0 whatever is set
    ('pytorch', {'RANK': '1', 'SLURM_PROCID': '0'}, 1),
    ('pytorch', {}, 0),
    ('slurm', {'RANK': '0', 'SLURM_PROCID': '7'}, 7),
    ('mpi', {'OMPI_COMM_WORLD_RANK': '2'}, 2),
])
def test_launch_rank_reads_the_launchers_variable(launcher, environ, rank):
    assert launch_rank(launcher, environ) == rank


@pytest.mark.parametrize('rank, shown', [('0', 1), ('1', 0)])
def test_only_rank_0_shows_python_warnings(monkeypatch, rank, shown):
    monkeypatch.setenv('RANK', rank)
    monkeypatch.delenv('LOCAL_RANK', raising=False)   # parse_launch_args sets it: undone after
    parser = argparse.ArgumentParser()
    add_launch_args(parser)
    with warnings.catch_warnings(record=True) as caught:   # restores the filters afterwards
        warnings.simplefilter('always')
        parse_launch_args(parser, ['--launcher', 'pytorch'])
        warnings.warn('a library warning', UserWarning)
    assert len(caught) == shown
