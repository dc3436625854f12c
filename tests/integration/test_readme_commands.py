"""The README's CPU commands run as written: every code block preceded by
``<!-- cpu-checked -->`` is run with bash in a copy of the repository; the GPU quick start
(``<!-- gpu-quick-start -->``) is parsed and its CPU parts run, with the run matrix it ships."""
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import List

import pytest
from mmengine.config import Config

from support import ROOT, load_tool
from mixedae.suite.results import load_matrix

MARKER = '<!-- cpu-checked -->'


def cpu_checked_blocks(text: str):
    """The bash code blocks that directly follow the marker line."""
    return re.findall(re.escape(MARKER) + r'\n```bash\n(.*?)\n```', text, flags=re.S)


def test_marked_blocks_are_found():
    text = open(os.path.join(ROOT, 'README.md')).read()
    assert text.count(MARKER) - text.count(f'`{MARKER}`') == len(cpu_checked_blocks(text)) >= 1
    assert cpu_checked_blocks(f'x\n{MARKER}\n```bash\necho a\n```\n```bash\nno\n```') == ['echo a']


@pytest.mark.slow
def test_readme_cpu_commands_run_as_written(tmp_path):
    repo = tmp_path / 'repo'
    repo.mkdir()
    for name in ('configs', 'mixedae', 'tools'):
        shutil.copytree(os.path.join(ROOT, name), repo / name,
                        ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(os.path.join(ROOT, 'README.md'), repo / 'README.md')
    os.symlink(sys.prefix, repo / '.venv')  # the interpreter running the tests
    env = {**os.environ, 'PYTHONPATH': str(repo), 'CUDA_VISIBLE_DEVICES': ''}
    for block in cpu_checked_blocks((repo / 'README.md').read_text()):
        out = subprocess.run(['bash', '-euo', 'pipefail', '-c', block], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f'README block failed:\n{block}\n{out.stderr[-4000:]}'
    # what the quick chain promises: a measured mIoU, labelled with its scale
    metrics = json.loads((repo / 'work_dirs/quick/ade20k.json').read_text())
    assert 0.0 <= metrics['mIoU'] <= 100.0
    table = (repo / 'work_dirs/quick/results.md').read_text()
    assert re.search(r'\| mixedae \(tiny ViT, generated 64 px data\) \| \d+\.\d\d \|', table)


QUICK_START = '<!-- gpu-quick-start -->'
MATRIX = 'configs/matrix_vit-b16.json'
METHODS = ('mixedae', 'mae', 'naivemix', 'mae-official', 'ibot-official', 'scratch')
TASKS = ('ade20k', 'coco')
#: the methods this project pretrains itself (the matrix's "pretrain" entries)
OWN = ('mixedae', 'mae', 'naivemix')


def quick_start_commands(text: str) -> List[List[str]]:
    """The argument lists of the quick-start block: comments dropped, continuation lines
    joined, ``a && b`` split in two."""
    block = re.search(re.escape(QUICK_START) + r'\n```bash\n(.*?)\n```', text, re.S).group(1)
    lines = [line.split('#')[0].strip() for line in block.replace('\\\n', ' ').splitlines()]
    return [shlex.split(part) for line in lines if line for part in line.split('&&')]


def test_quick_start_commands_are_split():
    text = f'{QUICK_START}\n```bash\n# c\na x && b \\\n  y  # z\n```'
    assert quick_start_commands(text) == [['a', 'x'], ['b', 'y']]


def test_matrix_lists_every_method_and_task_with_the_configs_weights():
    matrix = load_matrix(os.path.join(ROOT, MATRIX))
    runs = [r for r in matrix['runs'] if 'recipe' not in r]    # the default recipe
    assert sorted((r['method'], r['task']) for r in runs) == sorted(
        itertools.product(METHODS, TASKS))
    assert matrix['gpus'] == 8 and 'ViT-B/16' in matrix['scale']
    produced = {p['name']: p['checkpoint'] for p in matrix['pretrain']}
    assert sorted(produced) == sorted(OWN)
    for run in matrix['runs']:
        cfg = Config.fromfile(os.path.join(ROOT, run['config']))
        init = cfg.model.backbone.get('init_cfg') or {}
        if run['method'] in OWN[1:]:
            # the project's MAE and naive mixing: the random-init config loading the encoder
            # their pretraining wrote (the configs differ only in init_cfg: tested)
            assert 'vit-b16-scratch_' in run['config'] and not init
            assert run['checkpoint'] == produced[run['method']]
            continue
        assert f'vit-b16-{run["method"].removesuffix("-official")}_' in run['config']
        # the matrix loads exactly the weights its config names (none for random init)
        assert run.get('checkpoint') == init.get('checkpoint'), run['config']
        assert (run['method'] == 'scratch') == ('checkpoint' not in run)


def test_gpu_quick_start_parses_and_its_cpu_steps_run(tmp_path, capsys):
    text = open(os.path.join(ROOT, 'README.md')).read()
    commands = quick_start_commands(text)
    matrix = load_matrix(os.path.join(ROOT, MATRIX))
    makefile = open(os.path.join(ROOT, 'Makefile')).read()
    converted, pretrain_out, results = {}, None, []
    for argv in commands:
        if argv[0] == 'make':
            assert re.search(rf'^{argv[1]}:', makefile, re.M), argv
            continue
        if argv[0].endswith('.sh'):
            assert os.access(os.path.join(ROOT, argv[0]), os.X_OK), argv
            if argv[0] == 'tools/dist_train.sh':           # CONFIG GPUS [train.py options]
                train = load_tool('train')
                cfg = train.build_config(train.parse_args([argv[1], *argv[3:]]))
                pretrain_out = os.path.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
            continue
        assert argv[0] == '.venv/bin/python', argv
        tool, args = argv[1], argv[2:]
        if tool == 'tools/convert_checkpoint.py':
            parsed = load_tool('convert_checkpoint').parse_args(args)
            converted[parsed.dst] = parsed.src
        else:
            assert tool == 'tools/results.py' and args[1] == MATRIX, argv
            results.append(args[0])
    assert results == ['commands', 'run', 'collect']
    assert pretrain_out is not None
    # what the conversions and the matrix's pretrainings write is what the matrix loads;
    # MixedAE's comes from the README's pretraining, at the matrix's one schedule
    produced = {p['checkpoint'] for p in matrix['pretrain']}
    assert set(converted) | produced == {r['checkpoint'] for r in matrix['runs']
                                         if 'checkpoint' in r}
    assert converted['pretrain/mixedae_vit-b16_backbone.pth'] == os.path.normpath(pretrain_out)
    [mixedae] = [p for p in matrix['pretrain'] if p['name'] == 'mixedae']
    assert os.path.normpath(pretrain_out) == os.path.join(mixedae['work_dir'], 'epoch_1600.pth')
    tool = load_tool('results')
    capsys.readouterr()                                   # drop what build_config printed
    assert tool.main(['commands', os.path.join(ROOT, MATRIX)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * (len(matrix['pretrain']) + len(matrix['runs'])) == 32
    transfer = lines[2 * len(matrix['pretrain']):]     # after the pretrainings
    for run, (train, test) in zip(matrix['runs'], zip(transfer[::2], transfer[1::2])):
        assert train.startswith(f'tools/dist_train.sh {run["config"]} 8 ') and '--amp' in train
        assert test.startswith(f'tools/dist_test.sh {run["config"]} ')
        assert f'--out-metrics {run["metrics"]}' in test
    # collect before any run: every cell missing, never zero
    assert tool.main(['collect', os.path.join(ROOT, MATRIX), '--out', str(tmp_path)]) == 0
    table = (tmp_path / 'results.md').read_text()
    for method in METHODS:
        assert f'| {method} (ViT-B/16, full schedule) | missing | missing | missing |' in table
    assert '| ibot-official (lr 8e-5; ViT-B/16, full schedule) | missing | – | – |' in table
