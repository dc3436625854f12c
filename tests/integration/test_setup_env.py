"""tools/setup_env.sh picks its interpreter: $PYTHON, else the newest Python 3.10-3.12 on PATH."""
import os
import subprocess

import pytest

from support import ROOT

SCRIPT = os.path.join(ROOT, 'tools', 'setup_env.sh')
BASH = '/bin/bash'


def fake_pythons(folder, versions):
    """Stub interpreters on a PATH of their own: each prints its version (or fails: None)."""
    folder.mkdir()
    for name, version in versions.items():
        stub = folder / name
        stub.write_text('#!/bin/sh\n' + (f'echo {version}\n' if version else 'exit 1\n'))
        stub.chmod(0o755)
    return str(folder)


def pick(path, python=None):
    env = {'PATH': path, **({'PYTHON': python} if python else {})}
    return subprocess.run([BASH, SCRIPT, '--print-python'], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize('versions, chosen', [
    ({'python3.10': '3.10', 'python3.11': '3.11', 'python3': '3.13'}, 'python3.11'),
    ({'python3.10': '3.10', 'python3.12': '3.12', 'python3.11': '3.11'}, 'python3.12'),
    ({'python3': '3.12', 'python3.10': '3.10'}, 'python3'),
    ({'python3.12': None, 'python3.10': '3.10'}, 'python3.10'),  # 3.12 without venv
])
def test_newest_supported_interpreter_wins(tmp_path, versions, chosen):
    out = pick(fake_pythons(tmp_path / 'bin', versions))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == chosen


def test_no_supported_interpreter_lists_what_was_looked_for(tmp_path):
    out = pick(fake_pythons(tmp_path / 'bin', {'python3': '3.9', 'python3.12': None}))
    assert out.returncode != 0 and out.stdout == ''
    assert 'no Python 3.10 to 3.12' in out.stderr
    assert 'looked for python3.12 python3.11 python3.10 python3' in out.stderr
    assert 'python3 3.9' in out.stderr and 'python3.12 (no venv module)' in out.stderr
    assert 'PYTHON=' in out.stderr


def test_python_variable_wins_and_is_checked(tmp_path):
    path = fake_pythons(tmp_path / 'bin', {'python3.12': '3.12', 'python3.9': '3.9'})
    assert pick(path, 'python3.9').stdout.strip() == 'python3.9'
    out = pick(path, 'python-missing')
    assert out.returncode != 0 and 'PYTHON=python-missing is not an executable' in out.stderr


def test_mmcv_ops_switch_takes_only_0_or_1(tmp_path):
    out = subprocess.run([BASH, SCRIPT], env={'PATH': os.environ['PATH'], 'HOME': str(tmp_path),
                                              'MIXEDAE_MMCV_OPS': 'yes',
                                              'VENV': str(tmp_path / 'venv')},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "MIXEDAE_MMCV_OPS must be 0 (mmcv without compiled ops) or 1 (compiled ops), not 'yes'" \
        in out.stderr
    assert not (tmp_path / 'venv').exists()


def test_base_venv_must_be_set_up_first(tmp_path):
    out = subprocess.run([BASH, SCRIPT], env={'PATH': os.environ['PATH'], 'HOME': str(tmp_path),
                                              'MIXEDAE_BASE_VENV': str(tmp_path / 'base'),
                                              'VENV': str(tmp_path / 'layer')},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"MIXEDAE_BASE_VENV={tmp_path / 'base'} has no bin/python" in out.stderr
    assert not (tmp_path / 'layer').exists()
