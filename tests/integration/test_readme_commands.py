"""The README's CPU commands run as written: every code block preceded by
``<!-- cpu-checked -->`` is run with bash in a copy of the repository."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from support import ROOT

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
