"""atomic_write: permissions, a full disk, MMEngine's local writes routed through it."""
import errno
import os
import stat

import pytest
from mmengine.fileio import get_file_backend

from mixedae.utils.io import AtomicLocalBackend, atomic_write, write_metrics


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
