"""Crash-safe file writes: every output a later stage reads goes through :func:`atomic_write`.

The content is written to a temporary file in the destination's folder and renamed over the
destination only once it is complete and flushed to disk (``os.replace`` is atomic on POSIX
within one file system), so a kill at any moment leaves the previous file or none, never a
truncated one. A killed writer may leave its ``.<name>.*.tmp`` file behind; nothing reads it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator, Mapping


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'w', **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds.

    ``mode`` is ``'w'`` (text) or ``'wb'`` (binary); on an exception in the block the temporary
    file is removed and ``path`` is left untouched.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_write mode must be "w" or "wb", got {mode!r}')
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
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
