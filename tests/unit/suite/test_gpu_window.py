"""The GPU window's pieces that can be checked on this machine: the wheelhouse pins the
project's versions, the window's demo preset fits the window by its own estimates and keeps the
GPU preset's seeds and probe, and the scripts refuse bad input with a clear error. The scripts
themselves run in `make test-torch211` (tools/window_env.sh builds .venv-torch211) and in the
CPU rehearsal of docs/benchmarks.md."""
import os
import re
import subprocess

import pytest

from support import REPO, ROOT
from mixedae.suite.demo.plan import plan
from mixedae.suite.demo.presets import PRESETS
from mixedae.suite.demo.schedule import eta
from mixedae.suite.demo.stages import Demo


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def pins(text, pattern):
    """name -> version of every ``name==version`` matched by ``pattern`` in ``text``."""
    return {m.group(1).lower(): m.group(2) for m in re.finditer(pattern, text, re.M)}


def script_default(name):
    """The GPU window's default ``GPU_<name>=<seconds>`` in tools/gpu_window.sh."""
    return int(re.search(rf'(?:^|\s)GPU_{name}=(\d+)(?:\s|$)', read('tools/gpu_window.sh'),
                         re.M).group(1))


def test_wheelhouse_pins_the_project_versions_and_a_setuptools_with_pkg_resources():
    wheelhouse = pins(read('tools/wheelhouse.txt'), r'^([\w.-]+)==(\S+)$')
    project = pins(read('pyproject.toml'), r'^\s*"([\w.-]+)==([^"]+)",$')
    shared = {'mmengine', 'mmdet', 'mmsegmentation', 'timm'}
    assert {name: wheelhouse[name] for name in shared} == {name: project[name] for name in shared}
    # 15 downloaded + mmcv built by tools/make_wheelhouse.sh; never torch (the machine's own)
    assert len(wheelhouse) == 15 and 'mmcv' not in wheelhouse and 'torch' not in wheelhouse
    major = int(wheelhouse['setuptools'].split('.')[0])
    assert major < 81                     # mmengine imports pkg_resources, gone from 81 on


def test_window_demo_preset_keeps_the_gpu_seeds_and_probe_without_fine_tuning():
    gpu, window = PRESETS['gpu'], PRESETS['gpu-window']
    assert window.finetune_tasks == ()
    kept = ('pretrain_seeds', 'probe_iters', 'probe_batch', 'arch', 'num_train',
            'pretrain_epochs', 'pretrain_batch', 'device', 'amp')
    assert {k: getattr(window, k) for k in kept} == {k: getattr(gpu, k) for k in kept}
    assert 'Fine-tuning: none in this preset' in window.describe()


@pytest.mark.parametrize('preset', ['gpu-window', 'cpu-rehearsal'])
def test_window_demo_fits_a_window_of_its_own_by_its_estimates(preset, tmp_path):
    """A demo-only window: the preset's ETA before any stage ran, within the window less the
    environment's budget and the packing margin (both read from tools/gpu_window.sh)."""
    p = PRESETS[preset]
    demo = Demo(REPO, str(tmp_path / 'out'), str(tmp_path / 'data'), p)
    seconds = eta(plan(demo, lambda: None), p.expected_s, {}, p.parallel)
    left = (script_default('WINDOW_S') - script_default('ENV_BUDGET_S')
            - int(re.search(r'^PACK_S=(\d+)$', read('tools/gpu_window.sh'), re.M).group(1)))
    assert 0 < seconds <= left


def run_script(*args):
    return subprocess.run(['bash', *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_gpu_window_refuses_an_unknown_part_before_doing_anything(tmp_path):
    result = run_script('tools/gpu_window.sh', 'check', 'benchmark')
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown argument 'benchmark'; usage:")


@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_gpu_window_help_prints_its_header_and_does_nothing(tmp_path, flag):
    # as every launcher: --help was refused as an unknown argument
    out = tmp_path / 'out'
    result = subprocess.run(['bash', 'tools/gpu_window.sh', flag, 'check'], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, 'OUT': str(out)})
    assert result.returncode == 0 and result.stderr == ''
    lines = result.stdout.splitlines()
    assert lines[0].startswith('One command for a lent GPU window')
    assert '    bash tools/gpu_window.sh [--allow-cpu] [PART ...]     PART: check, bench, demo ' \
        '(all)' in lines
    assert not any(line.startswith(('#', 'set ')) for line in lines)
    assert not out.exists()


def test_window_env_refuses_a_wheelhouse_without_wheels(tmp_path):
    result = run_script('tools/window_env.sh', 'python3', str(tmp_path / 'venv'),
                        str(tmp_path / 'empty'))
    assert result.returncode == 2
    assert result.stderr.strip() == (f'error: no wheels in {tmp_path / "empty"}; build them '
                                      'with `make wheelhouse` and carry the folder')
    assert not (tmp_path / 'venv').exists()
