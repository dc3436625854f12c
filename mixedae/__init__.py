"""mixedae: MixedAE pretraining and dense-prediction transfer on OpenMMLab.

Importing the package first gives mmcv built without compiled ops a torchvision-backed
``mmcv._ext`` (``mixedae.utils.mmcv_ops``; before anything imports ``mmcv.ops``), then
registers its modules in the ``mixedae`` registry scope, routes MMEngine's local
checkpoint loading through the safe loader (``mixedae.utils.checkpoint``) and its local file
writes through ``mixedae.utils.io.atomic_write`` (no truncated checkpoint after a kill).
"""
from .utils import mmcv_ops

mmcv_ops.install()

from .utils.checkpoint import register_safe_local_loader  # noqa: E402

register_safe_local_loader()

from .utils.io import register_atomic_local_backend  # noqa: E402

register_atomic_local_backend()

from . import datasets, engine, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
