"""atomic_write / write_json / write_metrics: where the temporary file lives, what a failure
leaves behind, the bytes written."""
import json
import os
import re

import numpy as np
import pytest
import torch

from mixedae.utils.io import atomic_write, write_json, write_metrics


def test_the_temporary_file_lives_in_the_targets_folder(tmp_path):
    """os.replace is atomic only within one file system: the content is written next to the
    target (a hidden ``.<name>.*.tmp``), which then replaces it."""
    target = tmp_path / 'sub' / 'out.json'                      # the folder is created
    with atomic_write(target) as f:
        f.write('new')
        f.flush()
        temps = [p for p in os.listdir(target.parent) if p != 'out.json']
        assert len(temps) == 1 and temps[0].startswith('.out.json.') and temps[0].endswith('.tmp')
        assert (target.parent / temps[0]).read_text() == 'new'
        assert not target.exists()                               # not before the block ends
    assert os.listdir(target.parent) == ['out.json'] and target.read_text() == 'new'


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'out.json'
    target.write_text('old')
    with pytest.raises(KeyboardInterrupt):                      # any exception, not only Exception
        with atomic_write(target) as f:
            f.write('half')
            raise KeyboardInterrupt
    assert target.read_text() == 'old' and os.listdir(tmp_path) == ['out.json']


def test_binary_mode_and_open_arguments(tmp_path):
    with atomic_write(tmp_path / 'w.pt', 'wb') as f:
        torch.save(dict(a=torch.arange(3)), f)
    assert torch.equal(torch.load(tmp_path / 'w.pt')['a'], torch.arange(3))
    with atomic_write(str(tmp_path / 'w.txt'), encoding='utf-16') as f:
        f.write('é')
    assert (tmp_path / 'w.txt').read_bytes() == 'é'.encode('utf-16')


@pytest.mark.parametrize('mode', ['a', 'r', 'w+', 'x'])
def test_only_write_modes_are_accepted(tmp_path, mode):
    message = f'atomic_write mode must be "w" or "wb", got {mode!r}'
    with pytest.raises(ValueError, match=re.escape(message)):
        with atomic_write(tmp_path / 'x', mode):
            pass
    assert os.listdir(tmp_path) == []


def test_write_json_is_indented_sorted_and_newline_terminated(tmp_path):
    write_json(dict(b=1, a=[1, 2]), tmp_path / 'x.json')
    assert (tmp_path / 'x.json').read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_write_metrics_turns_tensors_and_numpy_scalars_into_floats(tmp_path):
    write_metrics({'mIoU': torch.tensor(41.5), 'aAcc': np.float32(80.0), 'n': 'x', 'k': 3},
                  tmp_path / 'm.json')
    text = (tmp_path / 'm.json').read_text()
    assert json.loads(text) == {'mIoU': 41.5, 'aAcc': 80.0, 'n': 'x', 'k': 3.0}
    assert '"k": 3.0' in text
