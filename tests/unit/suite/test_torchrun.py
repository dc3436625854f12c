"""mixedae.suite.torchrun (tools/_torchrun.py, what tools/dist_{train,test}.sh start): a rank
that fails ends the launch with one line and the rank's own exit status, not torchrun's
traceback and status 1."""
import sys

from mixedae.suite.torchrun import launch
from support import free_port


def rank_script(tmp_path, body: str) -> str:
    path = tmp_path / 'rank.py'
    path.write_text('import os, sys\n' + body)
    return str(path)


def torchrun_args(script: str, nproc: int = 1):
    return ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
            f'--master_port={free_port()}', f'--nproc_per_node={nproc}', script]


def test_a_failed_rank_ends_the_launch_in_one_line_with_its_status(tmp_path, capfd):
    script = rank_script(tmp_path, "print('error: data/x: folder not found', file=sys.stderr)\n"
                                   'sys.exit(2)\n')
    assert launch(torchrun_args(script)) == 2
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'ChildFailedError' not in err
    assert 'error: data/x: folder not found' in err              # the rank's own message
    assert err.rstrip().splitlines()[-1] == (
        f'error: rank 0 of {script} exited with status 2 (1 rank failed); its own message is '
        'above')


def test_a_run_whose_ranks_succeed_returns_zero(tmp_path, capfd):
    script = rank_script(tmp_path, "print('rank', os.environ['RANK'])\n")
    assert launch(torchrun_args(script, nproc=2)) == 0
    out = capfd.readouterr().out
    assert sorted(line for line in out.splitlines() if line.startswith('rank')) == \
        ['rank 0', 'rank 1']


def test_a_rank_killed_by_a_signal_gives_status_1_as_torchrun(tmp_path, capfd):
    script = rank_script(tmp_path, 'import signal\nos.kill(os.getpid(), signal.SIGKILL)\n')
    assert launch(torchrun_args(script)) == 1
    assert 'rank 0 of ' + script + ' was killed by signal 9' in capfd.readouterr().err
