"""mixedae: MixedAE pretraining and dense-prediction transfer on OpenMMLab.

Importing the package registers its modules in the ``mixedae`` registry scope and routes
MMEngine's local checkpoint loading through the safe loader (``mixedae.utils.checkpoint``).
"""
from .utils.checkpoint import register_safe_local_loader

register_safe_local_loader()

from . import datasets, engine, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
