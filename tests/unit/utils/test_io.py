"""atomic_write / write_json / write_metrics: where the temporary file lives, what a failure
leaves behind, the bytes written, permissions, a full disk, MMEngine's local writes routed
through it."""
import errno
import json
import os
import re
import stat

import numpy as np
import pytest
import torch
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.fileio.backends import registry_utils

from mixedae.utils.io import (AtomicLocalBackend, atomic_write, register_atomic_local_backend,
                              write_json, write_metrics)


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


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_files_get_the_permissions_open_would_give(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_write(tmp_path / 'atomic.txt') as f:
            f.write('x')
        with open(tmp_path / 'plain.txt', 'w') as f:
            f.write('x')
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(os.stat(tmp_path / 'atomic.txt').st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / 'plain.txt').st_mode)


def full_disk(monkeypatch):
    """Make the next flush to disk fail as a full file system does."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fsync', fsync)


def test_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / 'metrics.json'
    write_metrics({'mIoU': 1.0}, path)
    full_disk(monkeypatch)
    with pytest.raises(OSError, match=f'no space left on the device to write {path}') as err:
        write_metrics({'mIoU': 2.0}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_text() == '{\n  "mIoU": 1.0\n}\n'
    assert os.listdir(tmp_path) == ['metrics.json']   # the temporary file is gone


def test_a_quota_error_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    monkeypatch.setattr(os, 'fsync', fsync)
    path = tmp_path / 'm.json'
    with pytest.raises(OSError, match=f'no space left on the device to write {path}') as err:
        write_metrics({'mIoU': 2.0}, path)
    assert err.value.errno == errno.EDQUOT and os.listdir(tmp_path) == []


def test_the_data_is_flushed_before_it_is_synced(tmp_path, monkeypatch):
    # fsync only reaches the disk with what Python's buffer has handed to the OS
    seen = []
    real = os.fsync

    def fsync(fd):
        seen.append(os.fstat(fd).st_size)
        real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with atomic_write(tmp_path / 'a.txt') as f:
        f.write('x' * 1000)                       # far less than the buffer: still in Python
    assert seen == [1000] and (tmp_path / 'a.txt').read_text() == 'x' * 1000


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError, match='boom'):
        with atomic_write(tmp_path / 'a.txt') as f:
            f.write('partial')
            raise KeyError('boom')
    assert os.listdir(tmp_path) == []


def test_mmengine_local_writes_are_atomic(tmp_path, monkeypatch):
    backend = get_file_backend(str(tmp_path / 'x.pth'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'old', tmp_path / 'x.pth')
    backend.put_text('old', tmp_path / 'x.txt')
    full_disk(monkeypatch)
    for write, name, data in [(backend.put, 'x.pth', b'new'), (backend.put_text, 'x.txt', 'new')]:
        with pytest.raises(OSError, match=f'to write {tmp_path / name}'):
            write(data, tmp_path / name)
    assert (tmp_path / 'x.pth').read_bytes() == b'old' and (tmp_path / 'x.txt').read_text() == 'old'
    assert sorted(os.listdir(tmp_path)) == ['x.pth', 'x.txt']


def test_put_text_writes_in_the_encoding_it_is_given(tmp_path):
    AtomicLocalBackend().put_text('\u00e9t\u00e9', tmp_path / 'x.txt', encoding='latin-1')
    assert (tmp_path / 'x.txt').read_bytes() == b'\xe9t\xe9'


def test_registering_replaces_mmengines_local_backend(monkeypatch):
    monkeypatch.setitem(registry_utils.backends, 'local', LocalBackend)
    monkeypatch.setitem(registry_utils.prefix_to_backends, '', LocalBackend)
    register_atomic_local_backend()
    assert registry_utils.backends['local'] is AtomicLocalBackend
    assert registry_utils.prefix_to_backends[''] is AtomicLocalBackend
