"""Point mmcv's op wrappers at a chosen ``mmcv._ext`` and record which of its functions run.

Every ``mmcv/ops/*.py`` keeps the extension it loaded in a module global ``ext_module`` and
looks it up at each call, so swapping that global routes the unchanged Python wrappers (and
everything mmdet/mmseg build on them) to another implementation.
"""
from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, List


def op_modules() -> List[ModuleType]:
    """The imported ``mmcv.ops`` modules that hold an ``ext_module``."""
    return [m for name, m in list(sys.modules.items())
            if name.startswith('mmcv.ops.') and m is not None and hasattr(m, 'ext_module')]


class RecordingExt:
    """Forwards to ``ext``; counts each function called, by name, in ``calls``."""

    def __init__(self, ext: Any, calls: Counter):
        self._ext, self._calls = ext, calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._ext, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self._calls[name] += 1
            return target(*args, **kwargs)
        return call


@contextmanager
def serving(ext: Any, calls: Counter | None = None) -> Iterator[None]:
    """mmcv's ops run on ``ext`` (recording into ``calls`` when given) inside the block."""
    import mmdet.models  # noqa: F401  (import every mmcv.ops module first)
    import mmseg.models  # noqa: F401
    target = RecordingExt(ext, calls) if calls is not None else ext
    modules = op_modules()
    saved = [m.ext_module for m in modules]
    for m in modules:
        m.ext_module = target
    try:
        yield
    finally:
        for m, original in zip(modules, saved):
            m.ext_module = original
