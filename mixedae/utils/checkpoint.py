"""The one safe checkpoint loader.

Every checkpoint read in mixedae, and every local checkpoint MMEngine reads (``load_from``,
``resume``, ``init_cfg=dict(type='Pretrained')``), goes through :func:`load_checkpoint_file`:
``torch.load(weights_only=True)`` with exactly the non-tensor globals that MMEngine checkpoints
and the training checkpoints of the MAE, iBOT and timm releases contain allow-listed (their
``args`` is an ``argparse.Namespace`` of plain values, possibly numpy scalars). A pickle that
would construct anything else (i.e. run code) is refused.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .errors import MissingInputError, UserInputError

PathLike = Union[str, os.PathLike]


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint could not be read, or its contents are not what was expected."""


def _numpy_globals() -> List[Union[Any, Tuple[Any, str]]]:
    """numpy arrays, scalars and dtypes, as pickled by numpy 2.x and, under their old
    ``numpy.core`` names, by numpy 1.x (the MAE and iBOT releases were written with numpy 1.x)."""
    core = np._core if hasattr(np, '_core') else np.core  # numpy 2.x vs 1.x
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)]
    old_names = [(fn, f'numpy.core.multiarray.{fn.__name__}')
                 for fn in (core.multiarray._reconstruct, core.multiarray.scalar)]
    return [core.multiarray._reconstruct, core.multiarray.scalar, *old_names, np.ndarray,
            np.dtype, *dtype_classes]


#: globals allowed besides tensors and plain Python containers. ``getattr`` is needed because
#: HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``; it only
#: reaches attributes of objects already admitted here, and the unpickler still refuses to call
#: anything outside this list. ``argparse.Namespace`` is the ``args`` of MAE, iBOT and timm
#: training checkpoints; it is restored by updating its ``__dict__``, and its values pass
#: through the same allow-list.
SAFE_GLOBALS: List[Any] = [HistoryBuffer, getattr, argparse.Namespace, *_numpy_globals()]

#: what the refusal message lists as loadable.
ALLOWED_CONTENT = ('tensors, numbers, strings, lists/tuples/dicts, argparse.Namespace, numpy '
                   'arrays/scalars/dtypes, MMEngine HistoryBuffer')


def _refused_global(err: Exception) -> str:
    """The global a refused pickle asked for, as named in torch's message."""
    found = re.search(r'GLOBAL ([\w.]+)', str(err))
    return found.group(1) if found else 'an object'


def load_checkpoint_file(path: PathLike, map_location: Union[str, torch.device, None] = 'cpu'
                         ) -> Dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` and the mixedae allow-list.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a loadable checkpoint, or its pickle references a
            global outside :data:`SAFE_GLOBALS` (which could execute code).
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise MissingInputError(f'checkpoint file not found: {path}')
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refused to load {path}: its pickle needs {_refused_global(err)}, which is not '
            f'plain checkpoint content ({ALLOWED_CONTENT}) and could execute code') from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f'could not read checkpoint {path}: {err}') from err


def _load_from_local(filename: str, map_location=None) -> Dict[str, Any]:
    return load_checkpoint_file(filename, map_location=map_location)


def register_safe_local_loader() -> None:
    """Route MMEngine's local-file checkpoint loading through :func:`load_checkpoint_file`."""
    CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)


def state_dict_of(checkpoint: Any, source: PathLike, what: str = 'a checkpoint'
                  ) -> Dict[str, torch.Tensor]:
    """The weights of a loaded checkpoint: its ``state_dict`` entry, or the dict itself."""
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: {what} is a dict of tensors, or a training checkpoint "
                              "with such a dict under 'state_dict'")
    return sd


def non_finite_tensors(obj: Any, prefix: str = '') -> List[str]:
    """Names (dotted paths) of the floating-point tensors in ``obj`` holding NaN or Inf.

    ``obj`` is a checkpoint or any nesting of dicts, lists and tuples (model weights, optimizer
    moments, message hub buffers).
    """
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        return [prefix or '<tensor>'] if bad else []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [name for key, value in items
            for name in non_finite_tensors(value, f'{prefix}.{key}' if prefix else str(key))]
