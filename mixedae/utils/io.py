"""Crash-safe file writes: every output a later stage reads goes through :func:`atomic_write`.

The content is written to a temporary file in the destination's folder and renamed over the
destination only once it is complete and flushed to disk (``os.replace`` is atomic on POSIX
within one file system), so a kill at any moment leaves the previous file or none, never a
truncated one. A killed writer may leave its ``.<name>.*.tmp`` file behind; nothing reads it.
A full disk (``ENOSPC``, or a quota: ``EDQUOT``) is reported naming the file, after the
temporary file is removed.

:func:`register_atomic_local_backend` routes MMEngine's local file writes (checkpoints through
``save_checkpoint``, ``mmengine.dump``) through :func:`atomic_write` as well.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Union

from mmengine.fileio.backends import LocalBackend, register_backend

#: errors that mean the file system has no room left for the write.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'w', **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds.

    ``mode`` is ``'w'`` (text) or ``'wb'`` (binary); on an exception in the block the temporary
    file is removed and ``path`` is left untouched. The file gets the permissions ``open()``
    would give it (``0o666`` less the umask). A full disk raises ``OSError(ENOSPC)`` naming
    ``path``.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_write mode must be "w" or "wb", got {mode!r}')
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp creates 0600 whatever the umask
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise OSError(err.errno, f'no space left on the device to write {path} '
                          f'({os.strerror(err.errno)}); the previous file, if any, is unchanged '
                          'and the partial write was removed', path) from err
        raise


def write_json(data: Any, path: str | os.PathLike) -> None:
    """``data`` as indented JSON with sorted keys, written atomically."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write('\n')


def write_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Flat JSON of scalar metrics (tensors and numpy scalars as floats), written atomically."""
    write_json({k: (float(v) if hasattr(v, '__float__') else v) for k, v in metrics.items()},
               path)


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend, writing through :func:`atomic_write`.

    MMEngine's ``LocalBackend.put`` opens the destination itself, so a kill while a checkpoint
    is written leaves a truncated ``.pth`` under the final name.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        with atomic_write(filepath, 'wb') as f:
            f.write(obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        with atomic_write(filepath, 'w', encoding=encoding) as f:
            f.write(obj)


def register_atomic_local_backend() -> None:
    """Make :class:`AtomicLocalBackend` MMEngine's backend for local paths (no URI prefix)."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
